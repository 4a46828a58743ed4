"""The journal file of a study, made robust against kills, full disks and corruption.

:class:`JournalFile` is Optuna's :class:`JournalFileBackend` with three changes:

* its write lock is an ``fcntl`` lock (:class:`FileLock` on ``<journal>.write-lock``) that the
  kernel releases when its process dies: a writer killed while holding it never makes the
  next one wait (Optuna's symlink lock waits 30 s for a lock file left behind);
* every append first cuts a torn last line (a writer killed mid-append) and a failed append
  (``ENOSPC``) cuts what it wrote, so a record never follows a partial line;
* a line that is not a journal record raises :class:`RunDirError` naming the file, the line
  and how to recover, instead of a ``JSONDecodeError`` traceback.

:class:`CheckedJournalStorage` turns a record Optuna cannot replay into the same one line.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._file import BaseJournalFileLock

from pikenas.space.errors import RunDirError, path_error

__all__ = ["CheckedJournalStorage", "FileLock", "JournalFile", "corrupt_line"]

logger = logging.getLogger(__name__)


class FileLock(BaseJournalFileLock):
    """An exclusive ``fcntl`` lock on ``path`` (created if missing): ``with lock:`` or
    :meth:`acquire` / :meth:`release`; the kernel releases it when the process dies."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise path_error(exc, self.path, "lock") from None
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        self.release()


def corrupt_line(path: str | Path, line: int, what: str) -> RunDirError:
    """The one-line error of a journal whose ``line`` (1-based) is broken."""
    return RunDirError(
        f"{path}: line {line} {what} (a disk error or an edit); keep a copy of the file, then "
        f"keep the records before it: head -n {line - 1} {path} > {path}.fixed && "
        f"mv {path}.fixed {path} (the trials recorded after it are run again)"
    )


def _torn_bytes(handle: Any) -> int:
    """Bytes after the last newline of the open file ``handle`` (0: empty or complete)."""
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return 0
    position, tail = size, b""
    while position > 0 and b"\n" not in tail:
        step = min(65536, position)
        position -= step
        handle.seek(position)
        tail = handle.read(step) + tail
    return len(tail) - (tail.rfind(b"\n") + 1)


class JournalFile(JournalFileBackend):
    """The journal backend of pikenas (see the module docstring)."""

    def __init__(self, file_path: str | Path) -> None:
        path = Path(file_path)
        super().__init__(str(path), lock_obj=FileLock(path.with_name(path.name + ".write-lock")))

    def read_logs(self, log_number_from: int) -> Generator[dict[str, Any], None, None]:
        line = log_number_from
        try:
            for record in super().read_logs(log_number_from):
                if not isinstance(record, dict):
                    raise corrupt_line(self._file_path, line + 1, "is not a journal record")
                line += 1
                yield record
        except (ValueError, UnicodeDecodeError):  # JSONDecodeError, "Invalid log format."
            raise corrupt_line(self._file_path, line + 1, "is not a journal record") from None
        except OSError as exc:
            raise path_error(exc, self._file_path, "read") from None

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        with self._lock_held(), open(self._file_path, "r+b") as handle:
            torn = _torn_bytes(handle)
            size = handle.seek(0, os.SEEK_END)
            if torn:
                size -= torn
                handle.truncate(size)
                logger.warning("%s: cut a torn last line of %d bytes", self._file_path, torn)
            handle.seek(size)
            try:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as exc:
                handle.truncate(size)  # no partial record stays behind (a full disk)
                raise path_error(exc, self._file_path) from None

    def cut_torn_tail(self) -> int:
        """Cut a torn last line now (under the write lock); the bytes cut."""
        with self._lock_held(), open(self._file_path, "r+b") as handle:
            torn = _torn_bytes(handle)
            if torn:
                handle.truncate(handle.seek(0, os.SEEK_END) - torn)
                logger.warning("%s: cut a torn last line of %d bytes", self._file_path, torn)
        return torn

    def _lock_held(self) -> FileLock:
        lock = self._lock
        assert isinstance(lock, FileLock)
        return lock


class CheckedJournalStorage(JournalStorage):
    """:class:`JournalStorage` whose replay of a malformed record raises one line naming it."""

    def _sync_with_backend(self) -> None:
        try:
            super()._sync_with_backend()
        except (KeyError, TypeError, AttributeError, IndexError, AssertionError) as exc:
            where = getattr(self._backend, "_file_path", "the journal")
            line = self._replay_result.log_number_read
            raise corrupt_line(
                where, line, f"holds a record Optuna cannot replay ({type(exc).__name__})"
            ) from None
