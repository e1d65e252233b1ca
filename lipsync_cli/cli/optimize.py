"""`lipsync characters optimize`: a faster, checked variant of a character's models (docs/cpu.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer

from lipsync_cli.cli.common import Debug, console, err_console, run_reporting
from lipsync_cli.errors import InputError

if TYPE_CHECKING:
    from lipsync_cli.models.devices import Backend
    from lipsync_cli.models.precision import Precision


def optimize_command(
    name: Annotated[str, typer.Argument(metavar="NAME|PATH", help="The character (a name or a folder).",
                                        show_default=False)],
    precision: Annotated[str, typer.Option("--precision", metavar="int8|bf16|fp16", help="int8: a quantised UNet "
                                           "calibrated on the character's own frames and speech (a new file); "
                                           "bf16, fp16: the float models computed in that precision by a backend "
                                           "that offers it (OpenVINO; no new file).")] = "int8",
    backend: Annotated[str, typer.Option("--backend", metavar="onnxruntime|openvino", help="The backend the variant "
                                         "is checked on and made for (openvino needs lipsync-cli[openvino]).")
                       ] = "onnxruntime",
    calibration: Annotated[list[Path] | None, typer.Option("--calibration", metavar="AUDIO", help="Speech to "
                                                           "calibrate and check on (repeatable) [default: the "
                                                           "bundled samples].", show_default=False)] = None,
    min_psnr: Annotated[float, typer.Option("--min-psnr", metavar="DB", help="The bar: PSNR of the mouth patch "
                                            "against the float models, on held-out frames.")] = 40.0,
    force: Annotated[bool, typer.Option("--force", help="Keep a variant below the bar (marked as such; "
                                        "--precision auto never uses it).")] = False,
    output: Annotated[Path | None, typer.Option("--output", metavar="DIR", help="Write an optimised copy of the "
                                                "character to this new folder instead of into its own.",
                                                show_default=False)] = None,
    debug: Debug = False,
) -> None:
    """Make a faster variant of a character's models, check it against the float models on held-out frames of
    the character speaking (PSNR of the mouth patch, largest difference, seam score, mouth-activity
    correlation), and keep it only if it passes: beside the originals, named in the manifest with its figures
    and hashes. Exit 1 with the figure when it does not."""

    def work() -> int:
        from lipsync_cli.optimize import OptimizeOptions, optimize

        if precision not in ("int8", "bf16", "fp16"):
            raise InputError(f"--precision must be int8, bf16 or fp16, not {precision!r}")
        if backend not in ("onnxruntime", "openvino"):
            raise InputError(f"--backend must be onnxruntime or openvino, not {backend!r}")
        options = OptimizeOptions(cast("Precision", precision), cast("Backend", backend), tuple(calibration or ()),
                                  min_psnr, force, output)
        say = lambda text: err_console.print(text, soft_wrap=True, markup=False)  # noqa: E731
        outcome = optimize(name, options, say)
        v = outcome.variant
        where = outcome.folder / v.model
        kept = "kept by force, below the bar" if v.forced else "passed"
        console.print(f"{v.label}: {kept}; {where if v.precision == 'int8' else 'no new file (' + v.model + ')'}, "
                      f"named in {outcome.folder / 'character.toml'} ({outcome.seconds:.0f} s)", soft_wrap=True,
                      markup=False)
        return 0

    raise typer.Exit(run_reporting(work, debug))

