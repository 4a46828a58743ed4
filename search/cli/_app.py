"""The Typer application every command module registers on, and what every command prints
through: :func:`echo` (:func:`space._text.printable`: control characters of user strings
escaped, passwords of storage URLs masked) and :func:`fail`, the one-line error exit."""

from __future__ import annotations

import typer

from pikenas.space._text import printable

__all__ = ["app", "echo", "fail", "printable"]

app = typer.Typer(
    name="pikenas",
    help="Search low-precision CNN architectures scored by accuracy and ACE v2 (PikeLPN).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

def echo(message: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Print ``message`` (made :func:`printable`) on stdout, or stderr with ``err``."""
    typer.echo(printable(message), err=err, nl=nl)


@app.callback()
def _root() -> None:
    """Search low-precision CNN architectures scored by accuracy and ACE v2 (PikeLPN)."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``pikenas: error: MESSAGE`` (one line) on stderr and return the Exit to raise."""
    echo(f"pikenas: error: {' '.join(message.split())}", err=True)
    return typer.Exit(code)
