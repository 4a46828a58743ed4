"""The ``pikenas`` command line.

Each command lives in its own module of this package and registers itself on the Typer
application of :mod:`search.cli._app` (which the command modules import, never this package).
Errors a user can cause (:class:`space.errors.PikeNASError`, bad options) print one line and
exit with code 2; runtime failures of a candidate exit with 1. ``PIKENAS_DEBUG=1`` shows
tracebacks.
"""

from __future__ import annotations

import logging
import os
import sys

import typer
from typer.exceptions import TyperException

from search.cli._app import app, fail
from space.errors import EvaluationError, PikeNASError

__all__ = ["app", "fail", "main"]

# Importing the command modules registers their commands on ``app`` (order = help order).
from search.cli import (  # noqa: E402,F401,I001 (help order, not alphabetical)
    _zoo,
    _ace,
    _train,
    _search,
    _worker,
    _front,
    _dashboard,
    _export,
    _verify,
)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    logging.basicConfig(
        level=os.environ.get("PIKENAS_LOG", "WARNING").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    debug = os.environ.get("PIKENAS_DEBUG") == "1"
    try:
        # With standalone_mode=False click catches typer.Exit itself and returns its code.
        result = app(args=argv, prog_name="pikenas", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("pikenas: interrupted", err=True)
        return 130
    except TyperException as exc:  # bad command line: unknown option, bad value, ...
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        typer.echo(f"pikenas: error: {exc.format_message()}{hint}", err=True)
        return 2
    except EvaluationError as exc:
        if debug:
            raise
        typer.echo(f"pikenas: failed: {exc}", err=True)
        return 1
    except PikeNASError as exc:
        if debug:
            raise
        typer.echo(f"pikenas: error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("pikenas: interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
