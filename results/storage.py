"""Where a study lives: the one parser of storage targets, and opening them.

A target is a run folder ``OUT`` (its journal file ``OUT/study.log``), a journal file ``*.log``,
``journal:///abs/path.log``, or an RDB URL (``sqlite:///…``, ``postgresql[+driver]://…``,
``mysql[+driver]://…``). :func:`parse_storage` turns any of them into a
:class:`StorageTarget`; everything that needs to know what kind of storage a target is (opening
it, choosing the ask lock, showing it without its password) asks that object.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from space.errors import RunDirError

__all__ = [
    "DEFAULT_STUDY_NAME",
    "JOURNAL_NAME",
    "StorageKind",
    "StorageTarget",
    "display_name",
    "open_storage",
    "open_study",
    "parse_storage",
]

logger = logging.getLogger(__name__)

JOURNAL_NAME = "study.log"
DEFAULT_STUDY_NAME = "pikenas"

StorageKind = Literal["journal", "sqlite", "postgresql", "mysql"]
_RDB_KINDS: tuple[str, ...] = get_args(StorageKind)[1:]
_FORMS = (
    "a run folder, a journal file ending in .log, journal:///PATH.log, sqlite:///PATH.db, "
    "postgresql://USER:PASSWORD@HOST:PORT/DB or mysql://..."
)


@dataclass(frozen=True)
class StorageTarget:
    """A parsed storage target: its ``kind``, the ``url`` of an RDB (a plain ``postgresql://``
    is given the installed driver), and the absolute ``path`` of a file storage (the journal
    or the SQLite database; ``None`` for servers)."""

    kind: StorageKind
    url: str | None = None
    path: Path | None = None

    @property
    def is_file(self) -> bool:
        """True for storages that are one file on this machine (journal, SQLite)."""
        return self.path is not None

    def __str__(self) -> str:
        """The canonical target (what :func:`parse_storage` reads back to the same object)."""
        return self.url if self.url is not None else str(self.path)

    def display(self) -> str:
        """The target for messages and pages, with a password replaced by ``***``."""
        if self.url is None:
            return str(self.path)
        from sqlalchemy.engine import make_url  # optuna's RDB storage already depends on it

        return make_url(self.url).render_as_string(hide_password=True)


def _scheme(text: str) -> str | None:
    head, separator, _ = text.partition("://")
    return head.lower() if separator and head.replace("+", "").isalnum() else None


def _rdb(text: str, scheme: str) -> StorageTarget:
    dialect, _, driver = scheme.partition("+")
    if dialect not in _RDB_KINDS:
        raise RunDirError(f"unknown storage scheme {scheme!r}; give {_FORMS}")
    if dialect == "sqlite":
        path = text.split("://", 1)[1].removeprefix("/")
        if not path or path.startswith(":memory:"):
            raise RunDirError("sqlite:/// needs a database file (sqlite:///PATH.db)")
        resolved = Path(path).expanduser().resolve()
        return StorageTarget("sqlite", url=f"sqlite:///{resolved}", path=resolved)
    if dialect == "postgresql" and not driver and importlib.util.find_spec("psycopg") is None:
        # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; pikenas installs psycopg2.
        text = "postgresql+psycopg2://" + text.split("://", 1)[1]
    return StorageTarget(dialect, url=text)  # type: ignore[arg-type]


def parse_storage(target: str | Path, *, folders: bool = True) -> StorageTarget:
    """Parse a target (see the module docstring); ``folders=False`` refuses run folders (a
    ``--storage`` option names a storage, not a run). Bad targets raise :class:`RunDirError`."""
    text = str(target).strip()
    if not text:
        raise RunDirError(f"empty storage target; give {_FORMS}")
    scheme = _scheme(text)
    if scheme == "journal":
        return StorageTarget("journal", path=Path(text.split("://", 1)[1]).expanduser().resolve())
    if scheme is not None:
        return _rdb(text, scheme)
    path = Path(text).expanduser()
    if path.suffix == ".log":
        return StorageTarget("journal", path=path.resolve())
    if not folders:
        raise RunDirError(
            f"{text!r} is neither a storage URL nor a journal file ending in .log; give "
            f"{_FORMS.split(', ', 1)[1]}"
        )
    return StorageTarget("journal", path=path.resolve() / JOURNAL_NAME)


def display_name(target: str | Path) -> str:
    """``target`` for messages and pages: an RDB URL with its password replaced by ``***``,
    anything else as given."""
    text = str(target)
    if "://" not in text:
        return text
    try:
        return parse_storage(text).display()
    except (RunDirError, ValueError):  # unparsable: show only its scheme
        return text.split("://", 1)[0] + "://…"


def open_storage(
    target: str | Path | StorageTarget, *, create: bool = False
) -> optuna.storages.BaseStorage:
    """The Optuna storage of a target (a run folder, a journal file, an RDB URL).

    ``create=False`` refuses a journal file that does not exist (a typo must not silently
    start an empty study); ``create=True`` also cuts a torn last line off a journal (a writer
    killed mid-append) before anything is appended after it.
    """
    parsed = target if isinstance(target, StorageTarget) else parse_storage(target)
    if parsed.url is not None:
        try:
            return RDBStorage(
                parsed.url,
                engine_kwargs={"pool_pre_ping": True} if parsed.kind == "postgresql" else None,
            )
        except Exception as exc:  # SQLAlchemy raises many types; the message says enough
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise RunDirError(f"cannot open storage {parsed.display()}: {reason}") from None
    path = parsed.path
    assert path is not None
    if not create and not path.is_file():
        raise RunDirError(
            f"no study found at {path}; pass a run folder made by 'pikenas search' "
            "(it holds study.log) or a storage URL"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = JournalFileBackend(str(path))
    if create:
        _cut_torn_tail(backend, path)
    return JournalStorage(backend)


def _cut_torn_tail(backend: JournalFileBackend, path: Path) -> None:
    """Truncate an incomplete last line, holding the journal's own lock (Optuna skips such a
    line when reading, but a record appended after it would be lost with it)."""
    if _torn_bytes(path) == 0:
        return
    lock = backend._lock
    lock.acquire()
    try:
        torn = _torn_bytes(path)
        if torn:
            size = path.stat().st_size
            os.truncate(path, size - torn)
            logger.warning("%s: cut a torn last line of %d bytes (a killed writer)", path, torn)
    finally:
        lock.release()


def _torn_bytes(path: Path) -> int:
    """Bytes after the last newline of ``path`` (0 for an empty or complete file)."""
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        position, tail = size, b""
        while position > 0 and b"\n" not in tail:
            step = min(65536, position)
            position -= step
            handle.seek(position)
            tail = handle.read(step) + tail
    if not tail or tail.endswith(b"\n"):
        return 0
    newline = tail.rfind(b"\n")
    return len(tail) - (newline + 1)


def open_study(
    target: str | Path | optuna.storages.BaseStorage, study_name: str | None = None
) -> optuna.Study:
    """The existing study ``study_name`` of a run folder, journal file, URL or storage object.

    ``study_name=None`` picks the only study of the storage. No study, an unknown name or several
    studies without a name raise :class:`RunDirError` (one line listing the study names).
    """
    storage = target if isinstance(target, optuna.storages.BaseStorage) else open_storage(target)
    names = sorted(summary.study_name for summary in storage.get_all_studies())
    where = (
        "the storage"
        if isinstance(target, optuna.storages.BaseStorage)
        else repr(display_name(target))
    )
    if not names:
        raise RunDirError(f"{where} holds no study; run 'pikenas search' into it first")
    if study_name is None:
        if len(names) > 1:
            raise RunDirError(
                f"{where} holds several studies ({', '.join(names)}); choose one with --study NAME"
            )
        study_name = names[0]
    elif study_name not in names:
        raise RunDirError(
            f"no study named {study_name!r} in {where}; its studies are: {', '.join(names)}"
        )
    return optuna.load_study(study_name=study_name, storage=storage)
