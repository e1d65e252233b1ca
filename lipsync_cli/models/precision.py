"""The precisions a character's models can run in, and what `--precision` may ask for.

`fp32` is the character's own float models. `int8` is a quantised copy of the UNet (a file of its own, made
and checked by `lipsync characters optimize`). `bf16` and `fp16` are execution precisions of the float
models that a backend offers (OpenVINO's inference precision hint): no file of their own.
"""

from __future__ import annotations

from typing import Literal, cast

from lipsync_cli.errors import InputError

Precision = Literal["fp32", "int8", "bf16", "fp16"]
PrecisionRequest = Literal["auto", "fp32", "int8", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8", "bf16", "fp16")
OPTIMISED: tuple[Precision, ...] = ("int8", "bf16", "fp16")


def as_precision_request(value: str) -> PrecisionRequest:
    """A precision named on a command line, in a job file or a config, checked."""
    text = str(value).strip().lower()
    if text not in ("auto", *PRECISIONS):
        raise InputError(f"precision must be auto, fp32, int8, bf16 or fp16, not {value!r}", option="precision")
    return cast(PrecisionRequest, text)
