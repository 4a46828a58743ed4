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

__all__ = [
    "display_name",
    "DEFAULT_STUDY_NAME",
    "JOURNAL_NAME",
    "open_storage",
    "open_study",
    "journal_path",
    "is_url",
]

JOURNAL_NAME = "study.log"
DEFAULT_STUDY_NAME = "pikenas"
_RDB_PREFIXES = ("sqlite:", "postgresql:", "postgresql+", "mysql:", "mysql+")


def display_name(target: str | Path) -> str:
    """``target`` for messages and pages: an RDB URL with its password replaced by ``***``."""
    text = str(target)
    if not text.startswith(_RDB_PREFIXES):
        return text
    from sqlalchemy.engine import make_url  # optuna's RDB storage already depends on it

    try:
        return make_url(text).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show only its scheme
        return text.split("://", 1)[0] + "://…"


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


def open_study(
    target: str | Path | optuna.storages.BaseStorage, study_name: str | None = None
) -> optuna.Study:
    """The existing study ``study_name`` of a run folder, journal file, URL or storage object.

    ``study_name=None`` picks the only study of the storage. No study, an unknown name or several
    studies without a name raise :class:`RunDirError` (one line listing the study names).
    """
    storage = target if isinstance(target, optuna.storages.BaseStorage) else open_storage(target)
    names = sorted(summary.study_name for summary in storage.get_all_studies())
    where = "the storage" if isinstance(target, optuna.storages.BaseStorage) else repr(str(target))
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
