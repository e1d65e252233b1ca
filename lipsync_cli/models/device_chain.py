"""The UNet with its pre- and post-processing graphs (models/processing) on the UNet's device, every buffer
bound once (design.md section 11): a batch's uint8 crops go up, the 6-channel input is made there and fed
to the UNet in place, and its patches stay there. Per frame, the composite graph blends patch j into the
box region and returns the region's I420 planes (feather and hard); for the colour match, whose statistics
are computed on the host, the patches come back instead."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from lipsync_cli.compositing.blend import Blend, feather_mask
from lipsync_cli.errors import InferenceError
from lipsync_cli.frames.template import TemplateFrame
from lipsync_cli.models.contracts import UNetContract
from lipsync_cli.models.devices import Device
from lipsync_cli.models.inference import MouthModel
from lipsync_cli.models.processing import composite_inputs, prepare_inputs
from lipsync_cli.specs import CropSpec, InputSpec


@dataclass(frozen=True)
class RegionPlanes:
    """The I420 planes of a frame's box region with the patch blended in."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray


def chain_supports(contract: UNetContract) -> bool:
    """float32 models only: the shipped graphs make float32 inputs and read float32 patches."""
    return all(t == "float32" for t in contract.types.values())


class DeviceChain:
    def __init__(self, unet: MouthModel, prepare: ort.InferenceSession, composite: ort.InferenceSession,
                 spec: InputSpec, crop: CropSpec, device: Device, batch: int, blend: Blend, protected: bool = False
                 ) -> None:
        """`protected`: the character keeps some template pixels (protect masks), so the blend stays on the host."""
        self.unet, self.prepare, self.composite = unet, prepare, composite
        self.device = device
        self.kind = "cuda" if device.is_cuda else "cpu"
        self.batch = unet.fixed_batch or batch
        self.blends_here = blend in ("feather", "hard") and not protected
        inner = crop.inner
        self._prepare_constants = {k: self._value(v) for k, v in prepare_inputs(spec, inner).items()}
        mode: Blend = "hard" if blend == "hard" else "feather"
        self._composite_constants = {k: self._value(v) for k, v in composite_inputs(
            spec, crop, feather_mask(inner, mode), mode == "hard").items()}
        self._bound: tuple[ort.IOBinding, ort.IOBinding] | None = None
        self.count = 0  # frames in the batch on the device
        self.first = 0  # the frame number of its first frame

    def _value(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.kind, self.device.index)

    def _empty(self, shape: tuple[int, ...], dtype: type) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.kind, self.device.index)

    def _allocate(self, crop_shape: tuple[int, ...], audio_shape: tuple[int, ...]) -> None:
        b, size, unet = self.batch, self.unet.tail[-1], self.unet
        self.crops = self._empty((b, *crop_shape), np.uint8)
        self.visual = self._empty((b, 6, *crop_shape[:2]), np.float32)
        self.audio = self._empty((b, *audio_shape), np.float32)
        self.patches = self._empty((b, 3, size, size), np.float32)
        prepare = self.prepare.io_binding()
        prepare.bind_ortvalue_input("crops", self.crops)
        for name, value in self._prepare_constants.items():
            prepare.bind_ortvalue_input(name, value)
        prepare.bind_ortvalue_output("visual", self.visual)
        binding = unet.session.io_binding()
        binding.bind_ortvalue_input(unet.visual, self.visual)
        binding.bind_ortvalue_input(unet.audio, self.audio)
        binding.bind_ortvalue_output(unet.output, self.patches)
        self._bound = (prepare, binding)

    def run(self, crops: np.ndarray, features: np.ndarray) -> None:
        """Crops uint8 [n, H, W, 3] and audio features [n, ...] (n <= batch) -> patches on the device."""
        started = time.perf_counter()
        n = len(crops)
        if not 0 < n <= self.batch or len(features) != n:
            raise ValueError(f"{n} crops and {len(features)} features for batches of {self.batch}")
        if self._bound is None:
            self._allocate(crops.shape[1:], features.shape[1:])
        assert self._bound is not None
        if n < self.batch:  # one batch shape: pad
            crops = np.concatenate([crops, np.zeros((self.batch - n, *crops.shape[1:]), crops.dtype)])
            features = np.concatenate([features, np.zeros((self.batch - n, *features.shape[1:]), features.dtype)])
        try:
            self.crops.update_inplace(np.ascontiguousarray(crops))
            self.audio.update_inplace(np.ascontiguousarray(features, np.float32))
            for session, binding in zip((self.prepare, self.unet.session), self._bound, strict=True):
                session.run_with_iobinding(binding)
        except Exception as exc:  # onnxruntime's own exception types
            raise self.unet.failure(exc) from None
        self.first, self.count = self.unet.done, n
        self.unet.done += n
        if self.unet.on_run is not None:
            self.unet.on_run(n, time.perf_counter() - started)

    def patches_on_host(self) -> np.ndarray:
        """The batch's patches [n, 3, S, S] float32, checked like any model output."""
        out = self.patches.numpy()[: self.count]
        return self.unet.check(out.copy() if not self.device.is_cuda else out, self.count, self.first)

    def region_planes(self, j: int, frame: TemplateFrame) -> RegionPlanes:
        """Patch j of the batch blended into the frame's box region, as I420 planes."""
        x0, y0 = frame.region[:2]
        box = np.asarray(frame.box, np.int64) - np.array([x0, y0, x0, y0], np.int64)
        feeds = {"patches": self.patches, "index": self._value(np.array([j], np.int64)),
                 "region": self._value(frame.region_bgr), "box": self._value(box), **self._composite_constants}
        try:
            y, u, v, bad = self.composite.run_with_ort_values(["y", "u", "v", "nonfinite"], feeds)
        except Exception as exc:  # onnxruntime's own exception types
            raise self.unet.failure(exc) from None
        if int(bad.numpy()[0]):
            raise InferenceError(f"{self.unet.path}: the UNet produced NaN or infinite values at frame "
                                 f"{self.first + j}")
        return RegionPlanes(*(np.array(p.numpy()) for p in (y, u, v)))
