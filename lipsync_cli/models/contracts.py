"""The input/output contracts of the two models, checked on the ONNX file's own signature."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lipsync_cli.errors import ModelError
from lipsync_cli.features.layouts import Layout, detect_layout
from lipsync_cli.models.sessions import Signature, TensorInfo

MEL_WINDOW = (1, 80, 16)
FEATURES = 512


def _shape(value: TensorInfo) -> tuple:
    return value.shape


def _fits(shape: tuple, tail: tuple) -> bool:
    return len(shape) == len(tail) + 1 and tuple(shape[1:]) == tail


def _batch(shape: tuple) -> int | None:
    """The fixed batch size of an input, or None when it is dynamic."""
    return shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None


def _describe(values) -> str:
    return ", ".join(f"{v.name} {list(_shape(v))}" for v in values)


# The element types a model may take and give: fed in its own type, read back as float32.
ELEMENT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16"}


def _check_types(path: Path, role: str, values) -> dict[str, str]:
    for v in values:
        if v.type not in ELEMENT_TYPES:
            kind = v.type.removeprefix("tensor(").removesuffix(")")
            raise ModelError(f"{path}: {role} tensor {v.name!r} is {kind}; only float32 and float16 are supported")
    return {v.name: ELEMENT_TYPES[v.type] for v in values}


@dataclass(frozen=True)
class EncoderContract:
    path: Path
    input: str
    output: str
    fixed_batch: int | None
    types: dict[str, str] = field(default_factory=dict)  # tensor name -> numpy dtype name, inputs and output


@dataclass(frozen=True)
class UNetContract:
    path: Path
    visual: str
    audio: str
    output: str
    layout: Layout
    size: int
    fixed_batch: int | None
    types: dict[str, str] = field(default_factory=dict)


def check_audio_encoder(signature: Signature, path: Path) -> EncoderContract:
    inputs, outputs = signature.inputs, signature.outputs
    if len(inputs) != 1 or not _fits(_shape(inputs[0]), MEL_WINDOW):
        raise ModelError(f"{path}: audio encoder input must be one [N, 1, 80, 16] tensor, found {_describe(inputs)}")
    if len(outputs) < 1 or not _fits(_shape(outputs[0]), (FEATURES,)):
        raise ModelError(f"{path}: audio encoder output must be [N, 512], found {_describe(outputs)}")
    types = _check_types(path, "audio encoder input", inputs[:1]) | _check_types(path, "audio encoder output",
                                                                                   outputs[:1])
    return EncoderContract(path, inputs[0].name, outputs[0].name, _batch(_shape(inputs[0])), types)


def check_unet(signature: Signature, path: Path, size: int) -> UNetContract:
    inputs, outputs = signature.inputs, signature.outputs
    visual = [v for v in inputs if _fits(_shape(v), (6, size, size))]
    audio = [v for v in inputs if len(_shape(v)) >= 2 and detect_layout(_shape(v)) is not None]
    if len(inputs) != 2 or len(visual) != 1 or len(audio) != 1:
        raise ModelError(
            f"{path}: UNet inputs must be visual [N, 6, {size}, {size}] and audio [N, 512] or [N, 32, 16, 16], "
            f"found {_describe(inputs)}"
        )
    if len(outputs) < 1 or not _fits(_shape(outputs[0]), (3, size, size)):
        raise ModelError(f"{path}: UNet output must be [N, 3, {size}, {size}], found {_describe(outputs)}")
    batches = {b for b in (_batch(_shape(visual[0])), _batch(_shape(audio[0]))) if b is not None}
    if len(batches) > 1:
        raise ModelError(f"{path}: UNet inputs have different fixed batch sizes {sorted(batches)}")
    layout = detect_layout(_shape(audio[0]))
    assert layout is not None
    types = _check_types(path, "UNet input", inputs) | _check_types(path, "UNet output", outputs[:1])
    return UNetContract(path, visual[0].name, audio[0].name, outputs[0].name, layout, size,
                        batches.pop() if batches else None, types)
