"""The one log handler of the CLI and of its worker processes: its lines go through
:func:`space._text.printable` (no control characters, no passwords)."""

from __future__ import annotations

import logging
import os

from pikenas.space._text import printable

__all__ = ["configure_logging"]


class _PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def configure_logging(fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """One stderr handler at the ``PIKENAS_LOG`` level (default WARNING; an unknown level name
    falls back to it) whose lines are printable."""
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = os.environ.get("PIKENAS_LOG", "WARNING").upper()
    root.setLevel(level if level in logging.getLevelNamesMapping() else "WARNING")
    import optuna.logging  # its own stderr handler would bypass the masking

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
