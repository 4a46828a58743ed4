"""One worker of a study, built from its :class:`~search.spec.WorkerSpec` alone.

:func:`run_worker` opens the storage and the study (under the ask lock: one process
initialises it), builds the sampler and the evaluator, and runs :func:`search.loop.work`. Every
backend runs exactly this: the local backend as ``python -m search.worker`` (the spec JSON on
stdin), the Ray backend in an actor, ``pikenas worker`` in the foreground. A worker stopped by an
error stores it in its :class:`~results.record.WorkerReport` before it exits (exit code 1), so
the process that placed it reads why from the study.

A local worker process dies with its parent (``PR_SET_PDEATHSIG``): killing a search leaves
RUNNING trials for the heartbeat check, never orphaned workers.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys

from pikenas.evaluators.candidate import failure_reason
from pikenas.results.record import WorkerReport, record_worker_report
from pikenas.results.storage import check_storage_file, open_storage
from pikenas.search._evaluator import make_evaluator
from pikenas.search._journal import buffered
from pikenas.search._logs import configure_logging
from pikenas.search.lock import ask_lock
from pikenas.search.loop import work, worker_label
from pikenas.search.samplers import make_sampler
from pikenas.search.spec import WorkerSpec
from pikenas.search.study import open_search_study

__all__ = ["run_worker", "main"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def run_worker(spec: WorkerSpec) -> WorkerReport:
    """Work on the spec's study until it holds N COMPLETE trials; what this worker did."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = spec.config
    target = spec.storage
    check_storage_file(target, create_folder=True)  # before its ask lock file is made
    lock = ask_lock(target, spec.study_name)
    try:
        sampler = make_sampler(config.search.sampler, spec.seed, config.search.population_size)
        with lock:  # a fresh PostgreSQL database gets its tables and the study once
            storage = buffered(open_storage(target, create=True))
            study = open_search_study(config, storage, spec.study_name, sampler, spec.evaluator)
        try:
            return work(
                study,
                config.space,
                make_evaluator(spec.evaluator, config, spec.threads),
                spec.n_trials,
                max_ace=config.max_ace,
                fidelity=config.fidelity,
                checkpoints=spec.checkpoints,
                ask_lock=lock,
                heartbeat_interval=spec.heartbeat_interval,
                stale_after=spec.stale_after,
            )
        except Exception as exc:
            with contextlib.suppress(Exception):  # the storage itself may be what failed
                error = WorkerReport(label=worker_label(), error=failure_reason(exc))
                record_worker_report(study, error)
            raise
    finally:
        lock.close()


def _die_with_parent() -> None:
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def main() -> int:
    """``python -m search.worker``: run the worker whose spec JSON is on stdin."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group: the parent stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(f"%(asctime)s worker {os.getpid()} %(levelname)s %(name)s: %(message)s")
    report = run_worker(WorkerSpec.model_validate_json(sys.stdin.read()))
    logger.info("done: %s", report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
