"""The int8 UNet: static quantisation in the QDQ format with onnxruntime.quantization, weights per output
channel (int8, symmetric), activations per tensor (uint8) with ranges calibrated on the character's own
crops and speech (optimize/samples.py), so that the ranges are the ones the model will see. The audio
encoder stays float32: it runs once per window, batched, and is a small part of a frame's time.

The QDQ file keeps float32 inputs and outputs, so its contract is the float model's; onnxruntime and
OpenVINO both run it.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lipsync_cli.errors import InputError
from lipsync_cli.models.contracts import UNetContract

CALIBRATION_BATCH = 4


def import_quantization():
    """onnxruntime.quantization, which needs the onnx package (the extra lipsync-cli[optimize])."""
    try:
        import onnx  # noqa: F401
        from onnxruntime import quantization
    except ImportError as exc:
        raise InputError(f"making an int8 model needs the onnx package ({exc}): pip install "
                         "'lipsync-cli[optimize]'", option="precision") from None
    return quantization


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime.quantization logs advice through the root logger: keep it off the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_unet(float_model: Path, contract: UNetContract, batches: list[tuple[np.ndarray, np.ndarray]],
                  output: Path) -> None:
    """Write the int8 QDQ copy of `float_model` to `output`, calibrated on `batches` of (visual, audio) inputs."""
    q = import_quantization()

    class Reader:  # onnxruntime.quantization's CalibrationDataReader, read a stride at a time
        def __init__(self) -> None:
            self._items = iter(batches)

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self._items = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._items, None)
            if item is None:
                return None
            return {contract.visual: np.ascontiguousarray(item[0], np.float32),
                    contract.audio: np.ascontiguousarray(item[1], np.float32)}

        def rewind(self) -> None:
            self._items = iter(batches)

    with _quiet(), tempfile.TemporaryDirectory(prefix="lipsync-quantize-") as scratch:
        # onnxruntime's pre-processing first: batch normalisations folded into their convolutions and the shapes
        # inferred, so that each Conv becomes one integer convolution (unfolded, every BatchNormalization runs in
        # float between a DequantizeLinear and a QuantizeLinear, and the int8 model is slower than the float one)
        prepared = Path(scratch) / "prepared.onnx"
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
        q.quantize_static(str(prepared), str(output), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax,
                          # the ranges of one batch at a time, merged: memory stays that of one batch's activations
                          extra_options={"CalibStridedMinMax": 1, "WeightSymmetric": True,
                                         "ActivationSymmetric": False},
                          calibration_providers=["CPUExecutionProvider"])
