"""The ``pikenas`` command line.

Each command lives in its own module of this package and registers itself on the Typer
application of :mod:`search.cli._app` (which the command modules import, never this package).
Errors a user can cause (:class:`space.errors.PikeNASError`, bad options) print one line and
exit with code 2; runtime failures (:class:`~space.errors.RuntimeFailureError`, a full disk, any
unexpected error) print one line and exit with 1; Ctrl-C prints one line and exits with 130.
``PIKENAS_DEBUG=1`` shows tracebacks instead.
"""

from __future__ import annotations

import os
import sys

import typer
from typer.exceptions import TyperException

from pikenas.search._logs import configure_logging
from pikenas.search.cli._app import app, echo, fail
from pikenas.space.errors import PikeNASError, RunDirError, RuntimeFailureError, path_error
from pikenas.space.program.ir import ProgramError, ProgramOverflowError

__all__ = ["INTERRUPTED", "app", "configure_logging", "echo", "fail", "main"]

#: the exit code of a run stopped by Ctrl-C (128 + SIGINT).
INTERRUPTED = 130

# Importing the command modules registers their commands on ``app`` (order = help order).
from pikenas.search.cli import (  # noqa: E402,F401,I001 (help order, not alphabetical)
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


def _exit_code_and_line(exc: Exception) -> tuple[int, str]:
    """The exit code (2 bad input, 1 failed while running) and one line for ``exc``."""
    if isinstance(exc, PikeNASError):
        return (1 if isinstance(exc, RuntimeFailureError) else 2), " ".join(str(exc).split())
    if isinstance(exc, ProgramError):  # numpy-only, so outside the tree: a bad program or size
        return (1 if isinstance(exc, ProgramOverflowError) else 2), " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.errno is not None:
        error = path_error(exc, exc.filename if exc.filename is not None else "a file", "use")
        return (2 if isinstance(error, RunDirError) else 1), str(error)
    if isinstance(exc, MemoryError):
        return 1, "out of memory; use a smaller model or batch size, or fewer workers"
    text = " ".join(str(exc).split())[:500]
    return 1, f"internal error: {type(exc).__name__}: {text} (PIKENAS_DEBUG=1 shows the traceback)"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code: 0 done, 1 failed while running,
    2 bad input, 130 interrupted (Ctrl-C). Every error is one line on stderr."""
    configure_logging()
    debug = os.environ.get("PIKENAS_DEBUG") == "1"
    try:
        # With standalone_mode=False click catches typer.Exit itself and returns its code;
        # Typer turns Ctrl-C (KeyboardInterrupt) into Exit(130).
        result = app(args=argv, prog_name="pikenas", standalone_mode=False)
    except typer.Exit as exc:
        result = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        result = INTERRUPTED
    except TyperException as exc:  # bad command line: unknown option, bad value, ...
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        echo(f"pikenas: error: {' '.join(exc.format_message().split())}{hint}", err=True)
        return 2
    except Exception as exc:
        if debug:
            raise
        code, text = _exit_code_and_line(exc)
        echo(f"pikenas: {'failed' if code == 1 else 'error'}: {text}", err=True)
        return code
    if result == INTERRUPTED:
        echo(
            "pikenas: interrupted; what was finished is kept: rerun the same command to "
            "continue",
            err=True,
        )
        return INTERRUPTED
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
