"""Run the audio encoder and the UNet on batches, whatever batch size the ONNX file allows.

With IO binding (the default on a GPU), every call has one batch shape (a short last batch is padded) and
the inputs and the output live in buffers allocated once on the model's device: a call copies the inputs
in and the output out, and onnxruntime allocates nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from lipsync_cli.errors import InferenceError
from lipsync_cli.models.contracts import FEATURES, EncoderContract, UNetContract
from lipsync_cli.models.devices import Device


class Bindings:
    """A session's inputs and output bound to buffers on its device, for one set of input shapes."""

    def __init__(self, session: ort.InferenceSession, device: Device, output: str, output_type: str,
                 feeds: dict[str, np.ndarray], output_shape: tuple[int, ...]) -> None:
        kind = "cuda" if device.is_cuda else "cpu"
        self.on_host = not device.is_cuda
        self.shapes = {name: (value.shape, value.dtype) for name, value in feeds.items()}
        self.inputs = {name: ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), value.dtype, kind,
                                                                       device.index)
                       for name, value in feeds.items()}
        self.output = ort.OrtValue.ortvalue_from_shape_and_type(list(output_shape), np.dtype(output_type), kind,
                                                                device.index)
        self.binding = session.io_binding()
        for name, value in self.inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        self.binding.bind_ortvalue_output(output, self.output)

    def fits(self, feeds: dict[str, np.ndarray]) -> bool:
        return {name: (value.shape, value.dtype) for name, value in feeds.items()} == self.shapes

    def run(self, session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> np.ndarray:
        for name, value in feeds.items():
            self.inputs[name].update_inplace(value)
        session.run_with_iobinding(self.binding)
        out = self.output.numpy()  # a copy from a GPU; a view of the bound buffer on the CPU
        return out.copy() if self.on_host else out


# onnxruntime sessions whose CPU arena gives back what it holds unused at the end of their next call (the arena
# grows to the largest calls it has seen, and keeps that): asked for by lipsync serve once sessions have ended
_shrink_due: set[int] = set()
_shrink_lock = threading.Lock()


def shrink_next(sessions: Iterable[object]) -> None:
    """Each of these sessions' next call ends by shrinking its arena (other backends have no such arena)."""
    with _shrink_lock:
        _shrink_due.clear()  # those no longer loaded are not asked again
        _shrink_due.update(id(s) for s in sessions if isinstance(s, ort.InferenceSession))


def _take_shrink(session: object) -> bool:
    if not _shrink_due:
        return False
    with _shrink_lock:
        due = id(session) in _shrink_due
        _shrink_due.discard(id(session))
    return due


class BatchedModel:
    """session.run over any number of items, split to a fixed batch size when the model has one. Inputs are fed
    in the model's own element type; every output is checked (shape, type, finite values) and returned as
    float32, so that a model that breaks its contract at run time stops the render with a one-line error
    that names it."""

    def __init__(self, session: ort.InferenceSession, path: Path, output: str, fixed_batch: int | None,
                 role: str, tail: tuple[int, ...], types: dict[str, str],
                 on_run: Callable[[int, float], None] | None = None, bind_on: Device | None = None) -> None:
        self.session, self.path, self.output, self.fixed_batch = session, path, output, fixed_batch
        self.role, self.tail, self.types = role, tail, types
        self.on_run = on_run  # (items, seconds) after each call
        self.done = 0  # items processed so far: the frame number of the next batch's first item
        self.bind_on = bind_on  # IO binding on this device
        self._bindings: Bindings | None = None

    def failure(self, exc: Exception) -> InferenceError:
        detail = " ".join(str(exc).split())[:300]
        return InferenceError(f"{self.path}: inference failed in the {self.role} at frame {self.done} ({detail})")

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            if self.bind_on is not None:
                return self._bound(feeds)
            if _take_shrink(self.session):
                options = ort.RunOptions()
                options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
                return self.session.run([self.output], feeds, options)[0]
            return self.session.run([self.output], feeds)[0]
        except Exception as exc:  # onnxruntime's own exception types
            raise self.failure(exc) from None

    def _bound(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        assert self.bind_on is not None
        if self._bindings is None or not self._bindings.fits(feeds):
            n = len(next(iter(feeds.values())))
            self._bindings = Bindings(self.session, self.bind_on, self.output,
                                      self.types.get(self.output, "float32"), feeds, (n, *self.tail))
        return self._bindings.run(self.session, feeds)

    def __call__(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        started = time.perf_counter()
        n = len(next(iter(feeds.values())))
        if self.bind_on is not None and self.fixed_batch is None:
            self.fixed_batch = n  # the first call's size: later calls are padded or split to it
        typed = {k: np.ascontiguousarray(v, dtype=self.types.get(k, "float32")) for k, v in feeds.items()}
        out = self.check(self._batched(typed), n)
        self.done += n
        if self.on_run is not None:
            self.on_run(n, time.perf_counter() - started)
        return out

    def check(self, out: object, n: int, first: int | None = None) -> np.ndarray:
        """`out` for n items from item `first` (default: the next) if it keeps the contract, as float32."""
        first = self.done if first is None else first
        declared = f"[N, {', '.join(map(str, self.tail))}]"
        if not isinstance(out, np.ndarray) or out.dtype not in (np.float32, np.float16):
            kind = getattr(out, "dtype", type(out).__name__)
            raise InferenceError(f"{self.path}: the {self.role} returned {kind} values, not float32 or float16")
        if out.shape != (n, *self.tail):
            raise InferenceError(f"{self.path}: the {self.role} declares its output {declared} but returned "
                                 f"{list(out.shape)} for {n} frames (from frame {first})")
        if not np.isfinite(out.sum(dtype=np.float64)):
            finite = np.isfinite(out.reshape(n, -1))
            bad = int(np.flatnonzero(~finite.all(axis=1))[0])
            what = "NaN" if np.isnan(out[bad]).any() else "infinite values"
            raise InferenceError(f"{self.path}: the {self.role} produced {what} at frame {first + bad}")
        return out if out.dtype == np.float32 else out.astype(np.float32)

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
            result = self._run(part)
            if not isinstance(result, np.ndarray) or len(result) != step:
                return result  # let the check report it
            parts.append(result[: step - short])
        return np.concatenate(parts)


class AudioEncoder(BatchedModel):
    def __init__(self, session: ort.InferenceSession, contract: EncoderContract, bind_on: Device | None = None
                 ) -> None:
        super().__init__(session, contract.path, contract.output, contract.fixed_batch, "audio encoder",
                         (FEATURES,), contract.types, bind_on=bind_on)
        self.input = contract.input

    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Mel windows [N, 80, 16] -> features [N, 512]."""
        return self({self.input: windows[:, None]})


class MouthModel(BatchedModel):
    def __init__(self, session: ort.InferenceSession, contract: UNetContract,
                 on_run: Callable[[int, float], None] | None = None, bind_on: Device | None = None) -> None:
        super().__init__(session, contract.path, contract.output, contract.fixed_batch, "UNet",
                         (3, contract.size, contract.size), contract.types, on_run, bind_on)
        self.visual, self.audio = contract.visual, contract.audio

    def generate(self, visual: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Visual [N, 6, s, s] + audio features in the model's layout -> patches [N, 3, s, s]."""
        return self({self.visual: visual, self.audio: audio})
