"""Help that reads well: plain names (AUDIO..., NAME|PATH, INT) instead of Typer's type labels, the choices of
an option in its name, and an example at the end of each command's help."""

from __future__ import annotations

from typer.core import TyperCommand


def example(*lines: str) -> str:
    """An epilog of example command lines, kept as written (`\\b` stops Click from re-wrapping them)."""
    return "Example:\n\n\b\n" + "\n".join(f"  {line}" for line in lines)


class PlainHelp(TyperCommand):
    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = param.metavar or str(param.name).upper()
                pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx, formatter) -> None:
        arguments = [(p.metavar or str(p.name).upper(), getattr(p, "help", None) or "") for p in self.get_params(ctx)
                     if p.param_type_name == "argument"]
        options = [record for p in self.get_params(ctx) if p.param_type_name == "option"
                   if (record := p.get_help_record(ctx)) is not None]
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)
