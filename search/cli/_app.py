"""The Typer application every command module registers on, and the one-line error exit."""

from __future__ import annotations

import typer

__all__ = ["app", "fail"]

app = typer.Typer(
    name="pikenas",
    help="Search low-precision CNN architectures scored by accuracy and ACE v2 (PikeLPN).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Search low-precision CNN architectures scored by accuracy and ACE v2 (PikeLPN)."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``pikenas: error: MESSAGE`` on stderr and return the Exit to raise."""
    typer.echo(f"pikenas: error: {message}", err=True)
    return typer.Exit(code)
