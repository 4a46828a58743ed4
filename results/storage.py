"""Open the Optuna storage of a run folder or a storage URL (the one place that does it).

A run folder ``OUT`` keeps its study in the journal file ``OUT/study.log``. Accepted forms:
a run folder, a path to a ``.log`` journal file, ``journal:///abs/path.log``, or an RDB URL
(``sqlite:///…``, ``postgresql://…``).
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from space.errors import RunDirError

__all__ = ["JOURNAL_NAME", "open_storage", "journal_path", "is_url"]

JOURNAL_NAME = "study.log"
_RDB_PREFIXES = ("sqlite:", "postgresql:", "postgresql+", "mysql:", "mysql+")


def is_url(target: str) -> bool:
    return target.startswith(_RDB_PREFIXES) or target.startswith("journal://")


def journal_path(run_dir: str | Path) -> Path:
    """Absolute path of the journal file of run folder ``run_dir``."""
    return Path(run_dir).expanduser().resolve() / JOURNAL_NAME


def open_storage(
    target: str | Path, *, create: bool = False, heartbeat_interval: int | None = None
) -> optuna.storages.BaseStorage:
    """Storage for a run folder, a journal file or an RDB URL.

    ``create=False`` refuses a run folder or journal file that does not exist (a typo must not
    silently start an empty study). ``heartbeat_interval`` (seconds) applies to RDB storages.
    """
    text = str(target)
    if text.startswith(_RDB_PREFIXES):
        try:
            return RDBStorage(
                text,
                heartbeat_interval=heartbeat_interval,
                engine_kwargs={"pool_pre_ping": True} if "postgresql" in text else None,
            )
        except Exception as exc:  # SQLAlchemy raises many types; the message says enough
            raise RunDirError(f"cannot open storage {text!r}: {exc}".splitlines()[0]) from None
    if text.startswith("journal://"):
        path = Path(text.removeprefix("journal://"))
    else:
        path = Path(text).expanduser()
        if path.is_dir() or (create and path.suffix != ".log"):
            path = path / JOURNAL_NAME
    path = path.resolve()
    if not create and not path.is_file():
        raise RunDirError(
            f"no study found at {path}; pass a run folder made by 'pikenas search' "
            "(it holds study.log) or a storage URL"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))
