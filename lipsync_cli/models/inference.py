"""Run the audio encoder and the UNet on batches, whatever batch size the ONNX file allows."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lipsync_cli.errors import InferenceError
from lipsync_cli.models.contracts import EncoderContract, UNetContract


class BatchedModel:
    """session.run over any number of items, split to a fixed batch size when the model has one."""

    def __init__(self, session: ort.InferenceSession, path: Path, output: str, fixed_batch: int | None,
                 on_run: Callable[[int, float], None] | None = None) -> None:
        self.session, self.path, self.output, self.fixed_batch = session, path, output, fixed_batch
        self.on_run = on_run  # (items, seconds) after each call

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return self.session.run([self.output], feeds)[0]
        except Exception as exc:  # onnxruntime's own exception types
            detail = " ".join(str(exc).split())[:300]
            raise InferenceError(f"{self.path}: inference failed ({detail})") from None

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        started = time.perf_counter()
        out = self._batched(feeds)
        if self.on_run is not None:
            self.on_run(len(out), time.perf_counter() - started)
        return out

    def _batched(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        n = len(next(iter(feeds.values())))
        step = self.fixed_batch
        if step is None or step == n:
            return self._run(feeds)
        parts = []
        for a in range(0, n, step):
            part = {k: v[a : a + step] for k, v in feeds.items()}
            short = step - len(next(iter(part.values())))
            if short:
                part = {k: np.concatenate([v, np.zeros((short, *v.shape[1:]), v.dtype)]) for k, v in part.items()}
            parts.append(self._run(part)[: step - short])
        return np.concatenate(parts)


class AudioEncoder(BatchedModel):
    def __init__(self, session: ort.InferenceSession, contract: EncoderContract) -> None:
        super().__init__(session, contract.path, contract.output, contract.fixed_batch)
        self.input = contract.input

    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Mel windows [N, 80, 16] -> features [N, 512]."""
        return self({self.input: np.ascontiguousarray(windows[:, None], dtype=np.float32)})


class MouthModel(BatchedModel):
    def __init__(self, session: ort.InferenceSession, contract: UNetContract,
                 on_run: Callable[[int, float], None] | None = None) -> None:
        super().__init__(session, contract.path, contract.output, contract.fixed_batch, on_run)
        self.visual, self.audio = contract.visual, contract.audio

    def generate(self, visual: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Visual [N, 6, s, s] + audio features in the model's layout -> patches [N, 3, s, s]."""
        return self({self.visual: visual, self.audio: np.ascontiguousarray(audio, dtype=np.float32)})
