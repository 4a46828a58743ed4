"""The pikenas exception tree.

Every error a user can cause derives from :class:`PikeNASError`; its message is one line that
says what is wrong and how to fix it. The CLI turns these into exit code 2, and
:class:`RuntimeFailureError` (a failure while running, not bad input) into exit code 1.
:func:`path_error` is the one translation of an ``OSError`` on a path into one of them.
"""

from __future__ import annotations

import errno
from pathlib import Path

__all__ = [
    "PikeNASError",
    "RuntimeFailureError",
    "DiskError",
    "path_error",
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


class RuntimeFailureError(PikeNASError):
    """Something failed while running, not because of the input (the CLI exits with code 1)."""


class EvaluationError(RuntimeFailureError):
    """Training or evaluating a candidate failed (for example a non-finite loss).

    This is a runtime failure of one candidate, not a user error: the search records the trial
    as failed and goes on; the CLI exits with code 1.
    """


class SearchConfigError(PikeNASError, ValueError):
    """A search configuration (YAML) or search option is invalid."""


class RunDirError(PikeNASError):
    """A run folder or study does not exist or cannot be read."""


class DiskError(RuntimeFailureError):
    """Reading or writing a file failed at run time (a full disk, an I/O error)."""


#: errno -> how to fix it, for failures caused by the path the user chose (exit 2).
_PATH_FIXES = {
    errno.EACCES: "choose a path you may write to, or fix its permissions",
    errno.EPERM: "choose a path you may write to, or fix its permissions",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder; give a file path",
    errno.EEXIST: "something is in the way; move it or choose another path",
    errno.ENOENT: "its folder does not exist; create it or choose another path",
    errno.ELOOP: "it goes through a loop of symbolic links; choose another path",
}
#: errno -> how to fix it, for failures of the machine at run time (exit 1).
_RUNTIME_FIXES = {
    errno.ENOSPC: "free some space and rerun the same command (finished work is kept)",
    errno.EDQUOT: "free some space (disk quota) and rerun the same command",
    errno.EIO: "the disk reported an I/O error; check it and rerun",
}


def path_error(exc: OSError, path: str | Path, action: str = "write") -> PikeNASError:
    """``exc`` (raised on ``path``) as one line ``cannot ACTION PATH: reason (ENAME); fix``: a
    :class:`RunDirError` when the chosen path is the problem, a :class:`DiskError` otherwise."""
    number = exc.errno or 0
    name = errno.errorcode.get(number, "")
    reason = exc.strerror or str(exc) or type(exc).__name__
    text = f"cannot {action} {path}: {reason}" + (f" ({name})" if name else "")
    if number in _PATH_FIXES:
        return RunDirError(f"{text}; {_PATH_FIXES[number]}")
    return DiskError(f"{text}; {_RUNTIME_FIXES.get(number, 'check the disk and rerun')}")
