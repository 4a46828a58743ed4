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
from optuna.storages import RDBStorage

from pikenas.results._journal_file import CheckedJournalStorage, JournalFile
from pikenas.space._text import redact
from pikenas.space.errors import RunDirError, path_error

__all__ = [
    "DEFAULT_STUDY_NAME",
    "JOURNAL_NAME",
    "StorageKind",
    "StorageTarget",
    "display_name",
    "check_storage_file",
    "open_storage",
    "open_study",
    "parse_storage",
    "storage_folder",
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
        return redact(self.url) if self.url is not None else str(self.path)


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
    _check_server_url(text)
    return StorageTarget(dialect, url=text)  # type: ignore[arg-type]


def _check_server_url(text: str) -> None:
    """Refuse a server URL SQLAlchemy cannot parse, or without a host or database name."""
    from sqlalchemy.engine import make_url  # optuna's RDB storage already depends on it
    from sqlalchemy.exc import ArgumentError

    shown = redact(text)
    form = "give SCHEME://USER:PASSWORD@HOST:PORT/DATABASE"
    try:
        url = make_url(text)
    except (ArgumentError, ValueError) as exc:
        reason = redact(str(exc).split(";")[0].splitlines()[0]) if str(exc) else "malformed"
        raise RunDirError(f"storage URL {shown} is malformed ({reason}); {form}") from None
    if not url.host and "host" not in url.query:
        raise RunDirError(f"storage URL {shown} names no host; {form}")
    if not url.database:
        raise RunDirError(f"storage URL {shown} names no database; {form}")


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


def storage_folder(storage: optuna.storages.BaseStorage) -> Path | None:
    """The folder holding a file storage (the journal's or the SQLite database's): a run's
    folder, against which its relative paths (``final_dir``) are read; None for servers."""
    backend = getattr(storage, "_backend", None)
    file_path = getattr(backend, "_file_path", None)
    if isinstance(file_path, str):
        return Path(file_path).resolve().parent
    url = getattr(storage, "url", None)
    if isinstance(url, str) and url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).resolve().parent
    return None


def display_name(target: str | Path | StorageTarget) -> str:
    """``target`` for messages and pages, its password replaced by ``***``
    (:func:`space._text.redact`, the one masking)."""
    if isinstance(target, StorageTarget):
        return target.display()
    return redact(str(target))


def check_storage_file(target: StorageTarget, *, create_folder: bool = False) -> None:
    """Refuse a file storage (journal, SQLite) that cannot be written: a folder on its path is
    a file or not writable, the storage is a folder or a device, or it is not writable (one
    line naming the fix). ``create_folder``: create its missing folders (a new study's)."""
    path = target.path
    if path is None:
        return
    folder = path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(
            f"storage {path}: {existing} is a file, not a folder; give another path"
        )
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise RunDirError(
                f"storage {path}: cannot create its folder in {existing} (not writable); "
                "give another path"
            )
        if not create_folder:
            return
        _make_folder(folder)
    if path.exists() and not path.is_file():
        raise RunDirError(f"storage {path} is not a regular file; give the path of a file")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(
        path, os.R_OK | os.W_OK
    )):
        raise RunDirError(
            f"storage {path} is not writable by this user; fix its permissions or give "
            "another path"
        )


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise path_error(exc, folder, "create folder") from None


def open_storage(
    target: str | Path | StorageTarget, *, create: bool = False
) -> optuna.storages.BaseStorage:
    """The Optuna storage of a target (a run folder, a journal file, an RDB URL).

    ``create=False`` refuses a journal file or SQLite database that does not exist (a typo must
    not silently start an empty study). A journal is a :class:`~results._journal_file.JournalFile`
    (a torn last line is cut before anything is appended; a broken line is one error naming it);
    ``create=True`` cuts a torn last line at once and refuses a storage it cannot write;
    ``create=False`` (reading) needs no write access: a finished run on read-only media opens.
    """
    parsed = target if isinstance(target, StorageTarget) else parse_storage(target)
    if parsed.kind == "sqlite":
        if not create and not (parsed.path is not None and parsed.path.is_file()):
            raise RunDirError(
                f"no SQLite database at {parsed.path}; check the path (pikenas does not create "
                "an empty database to read from)"
            )
        if create:  # reading needs no write access (a run on read-only media)
            check_storage_file(parsed, create_folder=True)
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
    if create:  # reading needs no write access (a run on read-only media)
        check_storage_file(parsed, create_folder=True)
    try:
        backend = JournalFile(path)
        if create:
            backend.cut_torn_tail()
        return CheckedJournalStorage(backend)
    except OSError as exc:
        raise path_error(exc, path, "open") from None


def open_study(
    target: str | Path | StorageTarget | optuna.storages.BaseStorage, study_name: str | None = None
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
