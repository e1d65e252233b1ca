"""What a character's frames need on one device, apart from any stream that feeds it: the models' lease, the
template, the audio encoder, and the UNet or the device chain (design.md sections 5 and 11).

Frames are asked for by their output index; their template frame follows the character's playback rule, and
nothing here knows how many frames there will be. The file pipeline and live sessions both drive it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING

import numpy as np

from lipsync_cli.characters.manifest import Character
from lipsync_cli.compositing.blend import Blend
from lipsync_cli.frames.crops import fill_visual_input
from lipsync_cli.frames.template import TemplateFrame
from lipsync_cli.models.device_chain import DeviceChain, RegionPlanes, chain_supports
from lipsync_cli.models.devices import Device
from lipsync_cli.models.inference import AudioEncoder, MouthModel

if TYPE_CHECKING:
    from lipsync_cli.runtime import Runtime

Patch = np.ndarray | RegionPlanes  # a UNet patch [3, S, S] in [0, 1], or the box region blended on the device


class FrameRenderer:
    def __init__(self, runtime: Runtime, character: Character, device: Device, batch: int, blend: Blend,
                 timeout: float | None = None) -> None:
        """`batch`: frames per model call; `timeout`: how long to wait for room in the device's model budget."""
        self.character, self.device, self.blend = character, device, blend
        self.spec = character.template_spec
        self._stack = ExitStack()
        try:
            lease = self._stack.enter_context(runtime.registry.lease(
                character.model_files, device, character.name, timeout, precision=character.precision))
            self.template = self._stack.enter_context(runtime.templates.open(self.spec))
        except BaseException:
            self._stack.close()
            raise
        encoder_session, unet_session = lease.sessions
        bind_on = runtime.bind_on(device)
        self.encoder = AudioEncoder(encoder_session, character.encoder_contract, bind_on)
        self.unet = MouthModel(unet_session, character.unet_contract, on_run=lease.record, bind_on=bind_on)
        self.chain: DeviceChain | None = None
        if runtime.processes_on(device) and chain_supports(character.unet_contract):
            prepare, composite = runtime.processing_sessions(device)
            self.chain = DeviceChain(self.unet, prepare, composite, character.input, character.crop, device, batch,
                                     blend, protected=character.protect is not None)
        self.batch = self.chain.batch if self.chain is not None else batch
        inner = character.crop.inner
        self.input_shape = (inner, inner, 3) if self.chain is not None else (6, inner, inner)
        self.input_dtype = np.uint8 if self.chain is not None else np.float32

    def frame(self, i: int, stop: threading.Event | None = None) -> TemplateFrame:
        """The prepared template frame of output frame i."""
        return self.template.frame(self.spec.index(i), stop)

    def frames(self, first: int, count: int, stop: threading.Event | None = None) -> list[TemplateFrame]:
        return [self.frame(i, stop) for i in range(first, first + count)]

    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Mel windows [k, 80, 16] -> encoder outputs [k, 512]."""
        return self.encoder.encode(windows)

    def prepare(self, frames: Sequence[TemplateFrame], out: np.ndarray) -> np.ndarray:
        """The model input of `frames` written into `out` ([>= n, *input_shape]): the 6-channel input, or on
        the device chain the uint8 crops it makes the input from."""
        for slot, frame in enumerate(frames):
            if self.chain is not None:
                out[slot] = frame.crop
            else:
                fill_visual_input(out[slot], frame.crop, self.character.input)
        return out[: len(frames)]

    def infer(self, frames: Sequence[TemplateFrame], inputs: np.ndarray, features: np.ndarray, first: int
              ) -> list[Patch]:
        """One UNet call for consecutive or unrelated frames; `first` numbers them in error messages."""
        self.unet.done = first
        if self.chain is None:
            return list(self.unet.generate(inputs, features))
        self.chain.run(inputs, features)
        if self.chain.blends_here:
            return [self.chain.region_planes(j, frame) for j, frame in enumerate(frames)]
        return list(self.chain.patches_on_host())

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> FrameRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
