"""Which models a job renders with: `--precision auto|fp32|int8|bf16|fp16` resolved against the character's
checked variants and the device (design.md section 19).

The rule of `auto`, stated and measured rather than timed at every start: on a CPU, the fastest variant that
passed its check and that this machine can run, in the order measured on a 2-core AVX-512 CPU (the realistic
pair's UNet alone, docs/cpu.md): OpenVINO int8 (2.4x onnxruntime float32), onnxruntime int8 (2.3x), OpenVINO
bfloat16 (1.9x), OpenVINO float16 (not measured here: no CPU with FP16 arithmetic). Without such a variant the
float models run on onnxruntime as they always did, byte for byte; OpenVINO's own float32 (1.3x) is used only
when asked for (`--device openvino`), so that installing OpenVINO changes no existing render. On a CUDA GPU,
`auto` keeps the float models (the variants are made and checked for CPUs).

An explicit precision that the character lacks, that the device cannot compute in, whose check never ran, or
whose files no longer match the hashes stored at the check is refused with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from lipsync_cli.characters.manifest import Character
from lipsync_cli.characters.variants import Variant
from lipsync_cli.errors import DeviceError, InputError
from lipsync_cli.models.devices import CPU, Device, DeviceRequest, openvino_device
from lipsync_cli.models.precision import PrecisionRequest
from lipsync_cli.models.sessions import precision_refusal
from lipsync_cli.runtime import Runtime

# (backend, precision) fastest first, with the speed measured here against onnxruntime float32
RANK_ON_CPU: tuple[tuple[str, str, float | None], ...] = (
    ("openvino", "int8", 2.4), ("onnxruntime", "int8", 2.3), ("openvino", "bf16", 1.9), ("openvino", "fp16", None))


@dataclass(frozen=True)
class Resolved:
    character: Character  # rendering with the chosen variant's files and precision, or its float models
    device: Device
    notice: str | None  # why `auto` runs on the CPU, as before
    note: str | None = None  # the variant `auto` chose (or passed over), for the user

    @property
    def precision(self) -> str:
        return self.character.precision


def _rank(variant: Variant) -> int:
    for i, (backend, precision, _) in enumerate(RANK_ON_CPU):
        if (variant.backend, variant.precision) == (backend, precision):
            return i
    return len(RANK_ON_CPU)


def stale_reason(runtime: Runtime, character: Character, variant: Variant) -> str | None:
    """Why the variant's files are not the ones it was checked with, or None."""
    for name, digest in ((variant.model, variant.model_sha256), (variant.audio_encoder, variant.audio_encoder_sha256)):
        path = character.root / name
        if not path.resolve().is_relative_to(character.root.resolve()):
            return f"{path} is outside the character's folder"
        if not path.is_file():
            return f"{path} is missing"
        if runtime.file_sha256(path) != digest:
            return f"{path} has changed since the variant was checked (its sha256 differs from the manifest's)"
    if variant.source_sha256 is not None and runtime.file_sha256(character.model) != variant.source_sha256:
        return f"{character.model} has changed since the variant was made from it"
    return None


def _device_for(variant: Variant, base: Device) -> Device:
    """Where `variant` runs when the job asked for `base` (a CPU asked for by `auto`)."""
    if variant.backend == "openvino":
        return base if base.backend == "openvino" else openvino_device("CPU")
    return base if base.backend == "onnxruntime" else CPU


def resolve_models(runtime: Runtime, character: Character, request: DeviceRequest,
                   precision: PrecisionRequest = "auto") -> Resolved:
    """The character's models and device for a job asking for `request` in `precision`."""
    if precision == "fp32" or (precision == "auto" and not character.variants):
        device, notice = runtime.resolve(request, character.model_files, character.name)
        return Resolved(character, device, notice)
    if request.kind == "auto":
        candidates, notice = runtime.devices()
        base = candidates[0]
    else:
        base, notice = None, None
    if precision == "auto":
        return _auto(runtime, character, request, base, notice)
    return _explicit(runtime, character, request, base, notice, precision)


def _auto(runtime: Runtime, character: Character, request: DeviceRequest, base: Device | None,
          notice: str | None) -> Resolved:
    skipped = []
    on_cpu = (base is not None and base.on_cpu) or request.kind in ("cpu", "openvino")
    if on_cpu:
        wanted = None if request.kind == "auto" else ("openvino" if request.kind == "openvino" else "onnxruntime")
        if base is not None and runtime.config.devices.strip().lower() != "auto":
            wanted = base.backend  # the runtime's devices were named (a server's --devices): keep to them
        asked = base if base is not None else (openvino_device(request.target) if request.kind == "openvino" else CPU)
        for variant in sorted((v for v in character.variants if v.passed), key=_rank):
            if _rank(variant) == len(RANK_ON_CPU) or (wanted is not None and variant.backend != wanted):
                continue
            device = _device_for(variant, asked)
            if precision_refusal(device, variant.precision) is not None:
                continue
            stale = stale_reason(runtime, character, variant)
            if stale is not None:
                skipped.append(f"its {variant.label} variant is not used: {stale}")
                continue
            assert variant.quality is not None
            note = (f"precision auto: {character.name} renders with its {variant.label} variant on {device} "
                    f"(checked: {variant.quality.psnr_db:.1f} dB against float32)")
            return Resolved(character.with_variant(variant), device, notice, "; ".join([*skipped, note]))
    device, fallback = runtime.resolve(request, character.model_files, character.name)
    passed_over = "; ".join(f"{character.name}: {s}" for s in skipped) or None
    return Resolved(character, device, fallback if request.kind != "auto" else notice or fallback, passed_over)


def _explicit(runtime: Runtime, character: Character, request: DeviceRequest, base: Device | None,
              notice: str | None, precision: str) -> Resolved:
    mine = [v for v in character.variants if v.precision == precision]
    if not mine:
        raise InputError(f"{character.name} has no {precision} variant (lipsync characters optimize makes one)",
                         option="precision")
    named = base is not None and runtime.config.devices.strip().lower() != "auto"
    if request.kind == "openvino" or (named and base is not None and base.backend == "openvino"):
        backends = ["openvino"]
    elif request.kind in ("cpu", "cuda") or named or (base is not None and base.is_cuda):
        backends = ["onnxruntime"]
    else:  # auto on the CPU: either backend, the faster first
        backends = ["openvino", "onnxruntime"]
    usable = sorted((v for v in mine if v.backend in backends), key=_rank)
    if not usable:
        where = str(base or request)
        made = ", ".join(v.backend for v in mine)
        raise DeviceError(f"{character.name}'s {precision} variant was checked on {made}, not for {where}: ask for "
                          f"that device, or optimise it for this one", option="precision")
    reasons = []
    for variant in usable:
        asked = base if base is not None else (openvino_device(request.target) if request.kind == "openvino"
                                               else Device("cuda", request.index) if request.kind == "cuda" else CPU)
        device = _device_for(variant, asked)
        refusal = precision_refusal(device, variant.precision)
        if refusal is not None:
            reasons.append(refusal)
            continue
        if variant.quality is None:
            raise InputError(f"{character.name}'s {variant.label} variant was never checked against the float "
                             "models: optimise it again", option="precision")
        stale = stale_reason(runtime, character, variant)
        if stale is not None:
            raise InputError(f"{character.name}'s {variant.label} variant is refused: {stale}; optimise it again",
                             option="precision")
        chosen = character.with_variant(variant)
        if device.is_cuda:
            device, _ = runtime.resolve(DeviceRequest("cuda", device.index), chosen.model_files, chosen.name,
                                        chosen.precision)
        note: str | None = None
        if not variant.passed:
            note = (f"{character.name}'s {variant.label} variant is below its quality bar "
                    f"({variant.quality.psnr_db:.1f} dB < {variant.quality.min_psnr_db:g} dB; it was kept by force)")
        return Resolved(chosen, device, notice if request.kind == "auto" else None, note)
    raise DeviceError(f"{character.name}'s {precision} variant cannot run here: {'; '.join(reasons)}",
                      option="precision")
