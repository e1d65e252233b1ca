"""`lipsync characters`: list, inspect and check characters."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from typer.core import TyperGroup

from lipsync_cli.characters.manifest import (
    check_character,
    find_character,
    list_characters,
    search_dirs,
)
from lipsync_cli.cli.common import Debug, console, run_reporting
from lipsync_cli.cli.help import PlainHelp, example
from lipsync_cli.cli.optimize import optimize_command
from lipsync_cli.errors import InputError, LipsyncError


class _ShowByDefault(TyperGroup):
    """`lipsync characters [NAME]` shows; `lipsync characters import ...` imports."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:  # ctx: the (maybe vendored) click Context
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            typo = self._mistyped(args[0])
            if typo is not None:  # `import` misspelt: not a character to show (nor its help to print)
                ctx.fail(f"No such command {args[0]!r}. Did you mean {typo!r}?")
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["show", *args]
        return super().parse_args(ctx, args)

    def _mistyped(self, word: str) -> str | None:
        """The command `word` looks like a typo of, unless a character goes by that name."""
        close = difflib.get_close_matches(word, list(self.commands), n=1, cutoff=0.6)
        if not close:
            return None
        try:
            find_character(word)
        except LipsyncError:
            return close[0]
        return None


characters_app = typer.Typer(cls=_ShowByDefault, add_completion=False, no_args_is_help=False, rich_markup_mode=None,
                             help="List, inspect and check characters (`show`, the default), or import one.")


@characters_app.command("import", cls=PlainHelp, epilog=example(
    "lipsync characters import synctalk2d data/may --unet may.onnx --audio-encoder enc.onnx --name may\n"
    "lipsync characters import seed models/config.yaml --model sanders"))
def import_command(
    kind: Annotated[str, typer.Argument(metavar="KIND", help="Where it comes from: synctalk2d (a dataset folder) or "
                                        "seed (the seed's config.yaml).", show_default=False)],
    source: Annotated[Path, typer.Argument(metavar="DATASET_DIR|CONFIG", help="The dataset folder (full_body_img/, "
                                           "landmarks/, optional parsing/), or the seed's config.yaml.",
                                           show_default=False)],
    unet: Annotated[Path | None, typer.Option("--unet", metavar="FILE", help="synctalk2d: the trained UNet, "
                                              "exported to ONNX.", show_default=False)] = None,
    audio_encoder: Annotated[Path | None, typer.Option("--audio-encoder", metavar="FILE", help="synctalk2d: the "
                                                       "audio encoder, exported to ONNX.", show_default=False)] = None,
    name: Annotated[str | None, typer.Option("--name", metavar="NAME", help="The character's name (seed: default "
                                             "the model id).", show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", metavar="ID", help="seed: import only this model "
                                              "[default: every model of the config].", show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", metavar="DIR", help="synctalk2d: the character folder to make "
                                             "(default: ./characters/NAME); seed: the folder to make the characters "
                                             "in (default: ./characters).", show_default=False)] = None,
    debug: Debug = False,
) -> None:
    """Make a character from another project's dataset and trained models, or from the seed's model folders."""

    def work() -> int:
        if kind == "seed":
            return _import_seed(source, model, name, out)
        if kind != "synctalk2d":
            raise InputError(f"unknown kind {kind!r}: synctalk2d or seed")
        if unet is None or audio_encoder is None or name is None:
            raise InputError("importing a synctalk2d dataset needs --unet, --audio-encoder and --name")
        from lipsync_cli.characters.importers.synctalk2d import import_dataset

        folder = import_dataset(source, unet, audio_encoder, name, out or Path("characters") / name)
        console.print(f"imported {name} into {folder}; check it with: lipsync characters {folder}")
        return 0

    raise typer.Exit(run_reporting(work, debug))


def _import_seed(config: Path, model: str | None, name: str | None, out: Path | None) -> int:
    from lipsync_cli.characters.importers.seed import import_seed

    for done in import_seed(config, out or Path("characters"), model, name):
        console.print(f"imported the seed's model {done.id} into {done.folder}; check it with: lipsync characters "
                      f"{done.folder}", soft_wrap=True, markup=False)
        for note in done.notes:
            console.print(f"  note: {note}", soft_wrap=True, markup=False)
    return 0


characters_app.command("optimize", cls=PlainHelp, epilog=example(
    "lipsync characters optimize alice --precision int8",
    "lipsync characters optimize alice --precision bf16 --backend openvino",
    "lipsync characters optimize ./may --precision int8 --calibration speech.wav --output ./may-fast"))(
    optimize_command)


@characters_app.command("show", cls=PlainHelp, epilog=example("lipsync characters alice"))
def characters_command(
    name: Annotated[str | None, typer.Argument(metavar="NAME|PATH", help="A character name or folder to check in full.",
                                               show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")] = False,
    debug: Debug = False,
) -> None:
    """List the characters found, or show one in detail and check it (exit 1 if it is broken)."""

    def work() -> int:
        if as_json:
            return _json(name)
        if name is None:
            return _list()
        return _show(name)

    raise typer.Exit(run_reporting(work, debug))


def _describe(folder, char, status: str) -> dict:
    if char is None:
        return {"name": folder.name, "path": str(folder), "status": status}
    v = char.video
    return {"name": char.name, "path": str(folder), "status": "ok", "fps": str(char.fps),
            "template": {"file": str(char.template), "width": v.width, "height": v.height, "frames": v.frames,
                         "fps": v.fps},
            "audio_layout": char.layout, "model": str(char.model), "audio_encoder": str(char.audio_encoder),
            "crop": {"size": char.crop.size, "border": char.crop.border},
            "input": {"channels": list(char.input.channels), "color": char.input.color, "mask": list(char.input.mask)},
            "audio": {"pad_mode": char.audio.pad_mode, "window_end": char.audio.window_end},
            "variants": [v.to_toml_table() for v in char.variants]}


def _json(name: str | None) -> int:
    folders = [find_character(name)] if name is not None else list_characters()
    described = [_describe(folder, *check_character(folder)) for folder in folders]
    if name is not None:
        typer.echo(json.dumps(described[0], indent=2))
        return 0 if described[0]["status"] == "ok" else 1
    typer.echo(json.dumps(described, indent=2))
    return 0


def _list() -> int:
    table = Table(title="characters")
    for column in ("name", "path", "fps", "template", "audio layout", "status"):
        table.add_column(column, overflow="fold")
    folders = list_characters()
    for folder in folders:
        char, status = check_character(folder)
        if char is None:
            table.add_row(folder.name, str(folder), "", "", "", f"[red]{status}[/]")
        else:
            v = char.video
            table.add_row(char.name, str(folder), str(char.fps), f"{v.width}x{v.height}, {v.frames} frames",
                          char.layout, "[green]ok[/]")
    if not folders:
        console.print("no characters found in: " + ", ".join(str(d) for d in search_dirs()))
        return 0
    console.print(table)
    return 0


ASPECT_RANGE = (0.8, 1.25)  # width / height of a box; SyncTalk_2D's boxes are square


def _aspect_warning(boxes) -> str | None:
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ratios = widths / heights
    bad = [i for i, r in enumerate(ratios) if not ASPECT_RANGE[0] <= r <= ASPECT_RANGE[1]]
    if not bad:
        return None
    i = bad[0]
    return (f"{len(bad)} boxes are far from square (box {i} is {widths[i]}x{heights[i]}); the crop is resized to a "
            "square, so the face is stretched for the model")


def _types(types: dict[str, str]) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in types.items())


def _show(name: str) -> int:
    folder = find_character(name)
    char, status = check_character(folder)
    if char is None:
        console.print(f"[bold]{folder}[/]: [red]broken[/]: {status}")
        return 1
    v, e, u = char.video, char.encoder_contract, char.unet_contract
    rows = [
        ("name", char.name), ("folder", str(char.root)), ("fps", str(char.fps)),
        ("template", f"{char.template.name}: {v.width}x{v.height}, {v.frames} frames, {v.fps:g} fps"),
        ("boxes", f"{len(char.boxes)} boxes, sizes {int((char.boxes[:, 2] - char.boxes[:, 0]).min())}-"
                  f"{int((char.boxes[:, 2] - char.boxes[:, 0]).max())} px wide"),
        ("audio encoder", f"{e.path.name}: {e.input} -> {e.output}, batch {e.fixed_batch or 'dynamic'}, "
                          f"{_types(e.types)}"),
        ("UNet", f"{u.path.name}: {u.visual} + {u.audio} -> {u.output}, batch {u.fixed_batch or 'dynamic'}, "
                 f"{_types(u.types)}"),
        ("audio layout", f"{char.layout} ({'[N, 512]' if char.layout == 'per_frame' else '[N, 32, 16, 16]'})"),
        ("crop", f"box -> {char.crop.size}x{char.crop.size}, inner {char.crop.inner} (border {char.crop.border})"),
        ("input", f"channels {list(char.input.channels)}, {char.input.color}, mask {list(char.input.mask)}"),
        ("audio", f"pad {char.audio.pad_mode}, window end {char.audio.window_end}"),
        ("status", "[green]ok[/]"),
    ]
    for variant in char.variants:
        q = variant.quality
        figures = "never checked" if q is None else (
            f"{q.psnr_db:.1f} dB (bar {q.min_psnr_db:g}){', kept by force' if variant.forced else ''}, largest "
            f"difference {q.max_diff}, seam {q.seam_ring:.2f} / {q.seam_step:+.2f}, sync {q.sync:.3f}")
        rows.insert(-1, (f"variant {variant.precision}", f"{variant.backend}: {variant.model}; {figures}"))
    if char.first_frame or char.protect is not None:
        rows.insert(-1, ("template walk", f"ping-pong from frame {char.first_frame}"
                         + (f"; protect masks in {char.protect.name}/" if char.protect is not None else "")))
    warning = _aspect_warning(char.boxes)
    if warning:
        rows.insert(-1, ("[yellow]warning[/]", warning))
    table = Table(show_header=False, title=f"character {char.name}")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    return 0
