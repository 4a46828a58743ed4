"""The ask lock: what makes "count the trials, then ask" atomic across every worker of a study.

An :class:`AskLock` is a reusable context manager (``with lock: ...``) with :meth:`close`. It is
held around opening the study (one process initialises it), around each count-and-ask (so the
study ends with exactly N COMPLETE trials) and around each archid claim (so no architecture is
trained twice). :func:`ask_lock` chooses it by storage, the same for every kind of worker:

* a journal file or a SQLite database (one machine): an ``fcntl`` lock on ``<file>.lock``,
  released by the kernel when its process dies;
* PostgreSQL: a session-level advisory lock of the study, on a dedicated connection, released by
  the server when the connection (the process, the machine) dies; a connection lost between two
  uses is opened again;
* MySQL: none (the study may end with a few more than N COMPLETE trials; a warning says so).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from pathlib import Path
from typing import Any, Protocol

from pikenas.results._journal_file import FileLock
from pikenas.results.storage import StorageTarget, parse_storage
from pikenas.space._text import redact
from pikenas.space.errors import RunDirError

__all__ = ["AskLock", "FileLock", "NoLock", "PostgresAdvisoryLock", "advisory_lock_key", "ask_lock"]

logger = logging.getLogger(__name__)


class AskLock(Protocol):
    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...

    def close(self) -> None: ...


class NoLock:
    """No lock (storages without a cross-process lock)."""

    def __enter__(self) -> NoLock:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        pass


def advisory_lock_key(study_name: str) -> int:
    """The signed 64-bit PostgreSQL advisory-lock key of a study (stable across machines)."""
    digest = hashlib.sha256(f"pikenas-study:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresAdvisoryLock:
    """The advisory lock of ``study_name`` on the PostgreSQL server of ``url``."""

    def __init__(self, url: str, study_name: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        self.key = advisory_lock_key(study_name)
        self._engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        self._connection: Any = None

    def _execute(self, sql: str) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        for attempt in (1, 2):
            try:
                if self._connection is None:
                    self._connection = self._engine.connect()
                self._connection.execute(text(sql), {"key": self.key})
                return
            except DBAPIError as exc:
                self._drop_connection()
                if attempt == 2 or not exc.connection_invalidated:
                    where = redact(self._engine.url.render_as_string(hide_password=False))
                    reason = redact(str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc))
                    raise RunDirError(f"PostgreSQL at {where}: {reason}") from None

    def _drop_connection(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None

    def __enter__(self) -> PostgresAdvisoryLock:
        self._execute("SELECT pg_advisory_lock(:key)")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._execute("SELECT pg_advisory_unlock(:key)")
        except RunDirError as error:  # the connection died: the server dropped the lock too
            logger.warning("advisory lock: %s", error)

    def close(self) -> None:
        self._drop_connection()
        self._engine.dispose()


def ask_lock(target: str | Path | StorageTarget, study_name: str) -> AskLock:
    """The ask lock of ``study_name`` in the storage ``target`` (see the module docstring;
    the search passes its parsed target, a path is parsed here)."""
    parsed = target if isinstance(target, StorageTarget) else parse_storage(target)
    if parsed.kind == "postgresql":
        assert parsed.url is not None
        return PostgresAdvisoryLock(parsed.url, study_name)
    if parsed.path is not None:
        return FileLock(parsed.path.with_name(parsed.path.name + ".ask-lock"))
    logger.warning(
        "no cross-worker lock for %s: the study may end with a few more than N COMPLETE "
        "trials (use PostgreSQL for exact counts)",
        parsed.kind,
    )
    return NoLock()
