"""The pikenas exception tree.

Every error a user can cause derives from :class:`PikeNASError`; its message is one line that
says what is wrong and how to fix it. The CLI turns these into exit code 2.
"""

from __future__ import annotations

__all__ = [
    "PikeNASError",
    "ArchConfigError",
    "UnknownNameError",
    "CostModelError",
    "DataError",
    "EvaluationError",
    "SearchConfigError",
    "RunDirError",
]


class PikeNASError(Exception):
    """Base class of every error pikenas raises on bad input."""


class ArchConfigError(PikeNASError, ValueError):
    """An architecture description is invalid (unknown key, impossible geometry, bad bits)."""


class UnknownNameError(PikeNASError, KeyError):
    """A name (zoo model, quantizer family, sampler, data set, ...) is not registered."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0]) if self.args else ""


class CostModelError(PikeNASError):
    """ACE cannot be counted: unknown module, malformed cost table."""


class DataError(PikeNASError):
    """A data set is missing, malformed or does not fit the architecture."""


class EvaluationError(PikeNASError):
    """Training or evaluating a candidate failed (for example a non-finite loss).

    This is a runtime failure of one candidate, not a user error: the search records the trial
    as failed and goes on; the CLI exits with code 1.
    """


class SearchConfigError(PikeNASError, ValueError):
    """A search configuration (YAML) or search option is invalid."""


class RunDirError(PikeNASError):
    """A run folder or study does not exist or cannot be read."""
