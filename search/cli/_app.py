"""The Typer application every command module registers on, and what every command prints
through: :func:`echo` (:func:`space._text.printable`: control characters of user strings
escaped, passwords of storage URLs masked) and :func:`fail`, the one-line error exit.

The application's own options (before the command): ``--version``; ``--quiet`` (no progress
display, only warnings' level raised to errors) and ``--verbose`` (INFO log lines, in worker
processes too), kept in :data:`OUTPUT` for the commands that show progress.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Annotated

import typer

from pikenas.space._text import printable

__all__ = ["OUTPUT", "OutputMode", "app", "echo", "fail", "printable"]

app = typer.Typer(
    name="pikenas",
    help="Search low-precision CNN architectures scored by accuracy and ACE v2 (PikeLPN).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@dataclass
class OutputMode:
    """How much the commands print: ``quiet`` (results and errors only) or ``verbose``."""

    quiet: bool = False
    verbose: bool = False


#: set by the application's ``--quiet`` / ``--verbose`` for the command that runs.
OUTPUT = OutputMode()


def echo(message: str = "", *, err: bool = False, nl: bool = True) -> None:
    """Print ``message`` (made :func:`printable`) on stdout, or stderr with ``err``."""
    typer.echo(printable(message), err=err, nl=nl)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``pikenas: error: MESSAGE`` (one line) on stderr and return the Exit to raise."""
    echo(f"pikenas: error: {' '.join(message.split())}", err=True)
    return typer.Exit(code)


def _show_version(value: bool) -> None:
    if value:
        from pikenas import __version__

        echo(f"pikenas {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_show_version, help="Print the version and exit."
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option("--quiet", "-q", help="No progress display; print results and errors only."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Log what happens (INFO lines, workers included)."),
    ] = False,
) -> None:
    """Search low-precision CNN architectures scored by accuracy and ACE v2 (PikeLPN)."""
    if quiet and verbose:
        raise fail("--quiet and --verbose exclude each other; pass one of them")
    OUTPUT.quiet, OUTPUT.verbose = quiet, verbose
    if quiet or verbose:
        level = "ERROR" if quiet else "INFO"
        os.environ["PIKENAS_LOG"] = level  # worker processes configure their logging from it
        logging.getLogger().setLevel(level)
