"""The one log handler of the CLI and of its worker processes: its lines go through
:func:`space._text.printable` (no control characters, no passwords)."""

from __future__ import annotations

import logging
import os
import sys

from pikenas.space._text import printable

__all__ = ["configure_logging"]


class _PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream of the
    moment it was made (the CLI called in-process, under a test's or a tool's capture); a
    stream set on purpose (the progress display routes lines above its bar) is kept until it
    is set back to standard error."""

    _routed: object = None

    @property  # type: ignore[override]
    def stream(self) -> object:
        return self._routed if self._routed is not None else sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        self._routed = None if value is sys.stderr or value is sys.__stderr__ else value


def configure_logging(fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """One stderr handler at the ``PIKENAS_LOG`` level (default WARNING; an unknown level name
    falls back to it) whose lines are printable."""
    handler = _StderrHandler()
    handler.setFormatter(_PrintableFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = os.environ.get("PIKENAS_LOG", "WARNING").upper()
    root.setLevel(level if level in logging.getLevelNamesMapping() else "WARNING")
    import optuna.logging  # its own stderr handler would bypass the masking

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
