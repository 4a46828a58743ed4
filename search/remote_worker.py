"""``pikenas worker``: one plain Optuna worker joining a shared study, from any machine.

Start it on any number of machines against one storage (PostgreSQL in practice; any Optuna
storage URL or journal file works on one machine). Each worker creates the study if it does
not exist yet (directions ``maximize, minimize``, the study attributes of docs/study_contract.md,
the zoo baselines enqueued once), then runs the same per-trial logic as the local backend
(:func:`search.worker.work` -> :func:`search.objective.run_trial`) until the study holds N
COMPLETE trials.

Dead workers: each running trial carries its worker's ``host:pid`` and a heartbeat refreshed
every ``heartbeat_interval`` seconds; the other workers fail a trial whose heartbeat is older
than ``stale_after`` seconds (or whose worker process is gone, on the same host) and enqueue
its genome again, so a killed machine costs only its running trials. Heartbeats are compared
with the checking machine's clock: keep the machines' clocks in sync (NTP).

Exact counts: on PostgreSQL the workers take a server-side advisory lock (one per study) around
"count the COMPLETE and RUNNING trials, then ask", so the study ends with exactly N COMPLETE
trials however many machines take part, and the lock dies with a dead worker's connection. On a
journal file a ``fcntl`` lock next to it does the same on one machine. Other RDB storages
(SQLite, MySQL) get no lock: the study may overshoot N by the trials asked at the same instant.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space.errors import PikeNASError, RunDirError

if TYPE_CHECKING:
    import optuna

    from search.config import SearchConfig
    from search.worker import WorkerSummary

__all__ = [
    "advisory_lock_key",
    "PostgresAdvisoryLock",
    "ask_lock_for",
    "open_shared_study",
    "run_worker",
]

logger = logging.getLogger(__name__)


def advisory_lock_key(study_name: str) -> int:
    """The signed 64-bit PostgreSQL advisory-lock key of a study (stable across machines)."""
    digest = hashlib.sha256(f"pikenas-study:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class PostgresAdvisoryLock(AbstractContextManager["PostgresAdvisoryLock"]):
    """A reusable lock held on a PostgreSQL server: ``with lock: ...`` takes the session-level
    advisory lock of ``study_name`` on a dedicated connection (the server releases it when the
    process dies). A connection lost between two uses is opened again. Call :meth:`close` when
    done."""

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
                    where = self._engine.url.render_as_string(hide_password=True)
                    reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
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


def ask_lock_for(storage_target: str, study_name: str) -> AbstractContextManager[Any] | None:
    """The lock that makes "count, then ask" atomic for this storage (None: no such lock)."""
    from results.storage import is_url, journal_path

    if storage_target.startswith(("postgresql:", "postgresql+")):
        return PostgresAdvisoryLock(storage_target, study_name)
    if is_url(storage_target) and not storage_target.startswith("journal://"):
        logger.warning(
            "no cross-worker lock for %s: the study may end with a few more than N COMPLETE "
            "trials (use PostgreSQL for exact counts)",
            storage_target.split(":", 1)[0],
        )
        return None
    from search.worker import FileLock

    if storage_target.startswith("journal://"):
        path = Path(storage_target.removeprefix("journal://"))
    elif storage_target.endswith(".log"):
        path = Path(storage_target)
    else:
        path = journal_path(storage_target)
    return FileLock(path.expanduser().resolve().with_suffix(".lock"))


def open_shared_study(
    config: SearchConfig,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    sampler: optuna.samplers.BaseSampler,
) -> optuna.Study:
    """Load ``study_name`` or create it (directions, study attributes, baselines enqueued once).

    Call it holding the study's ask lock (:func:`ask_lock_for`) so that two workers starting
    together do not both enqueue the baselines.

    A study that exists with another search config is refused: every worker of a study must
    search the same space with the same budgets (the ``search:`` run settings may differ).
    """
    import optuna

    from search.objective import DIRECTIONS

    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        directions=list(DIRECTIONS),
        sampler=sampler,
        load_if_exists=True,
    )
    if [d.name.lower() for d in study.directions] != list(DIRECTIONS):
        raise PikeNASError(
            f"study {study_name!r} has directions "
            f"{[d.name.lower() for d in study.directions]}, not {list(DIRECTIONS)}; "
            "it is not a pikenas study: pass another --study name"
        )
    stored = study.user_attrs.get("search_config")
    if stored is None:
        _initialise_study(study, config)
    elif _searched(stored) != _searched(config.to_json()):
        raise PikeNASError(
            f"study {study_name!r} was created with another search config; pass the same "
            "CONFIG file as the other workers (or another --study name)"
        )
    return study


def _searched(config_json: str) -> str:
    """The parts of a config JSON every worker must share (all but the run settings)."""
    import json

    data = json.loads(config_json)
    data.pop("search", None)
    return json.dumps(data, sort_keys=True)


def _initialise_study(study: optuna.Study, config: SearchConfig) -> None:
    """Study attributes of docs/study_contract.md and the zoo baselines enqueued as fixed points."""
    from importlib.metadata import version

    from space.zoo import get_zoo_arch

    study.set_user_attr("pikenas_version", version("pikenas"))
    study.set_user_attr("dataset", config.dataset.name)
    study.set_user_attr("cost_table", "ace_v2")
    space = config.space
    for name in config.baselines:
        arch = get_zoo_arch(
            name,
            resolution=space.resolution,
            input_channels=space.input_channels,
            num_classes=space.num_classes,
        )
        study.enqueue_trial(space.encode(arch), user_attrs={"baseline": name})
    # Written last: its presence tells the other workers the study is ready.
    study.set_user_attr("search_config", config.to_json())


def run_worker(
    config: SearchConfig,
    *,
    storage: str,
    study_name: str,
    n_trials: int,
    sampler_name: str | None = None,
    seed: int | None = None,
    evaluator_spec: str = "proxy",
    threads: int = 1,
    heartbeat_interval: float = 5.0,
    stale_after: float = 60.0,
) -> tuple[WorkerSummary, optuna.Study]:
    """Work on ``study_name`` in ``storage`` until it holds ``n_trials`` COMPLETE trials."""
    import torch

    from results.storage import open_storage
    from search.objective import make_evaluator
    from search.samplers import make_sampler
    from search.worker import work

    if n_trials < 1:
        raise PikeNASError(f"--trials must be at least 1 (got {n_trials})")
    if threads < 1:
        raise PikeNASError(f"--threads must be at least 1 (got {threads})")
    if heartbeat_interval <= 0 or stale_after <= 2 * heartbeat_interval:
        raise PikeNASError(
            f"--stale-after ({stale_after} s) must exceed twice --heartbeat-interval "
            f"({heartbeat_interval} s), or live workers would be declared dead"
        )
    torch.set_num_threads(threads)
    sampler = make_sampler(
        sampler_name or config.search.sampler, seed, config.search.population_size
    )
    lock = ask_lock_for(storage, study_name)
    try:
        # Under the lock: concurrent table creation on a fresh PostgreSQL database can fail,
        # and only one worker may enqueue the baselines.
        with lock if lock is not None else contextlib.nullcontext():
            optuna_storage = open_storage(storage, create=True)
            study = open_shared_study(config, optuna_storage, study_name, sampler)
        evaluator = make_evaluator(evaluator_spec, config, threads)
        summary = work(
            study,
            config.space,
            evaluator,
            n_trials,
            max_ace=config.max_ace,
            ask_lock=lock,
            heartbeat_interval=heartbeat_interval,
            stale_after=stale_after,
        )
    finally:
        if isinstance(lock, PostgresAdvisoryLock):
            lock.close()
    return summary, study
