"""Entry point of one local worker process: ``python -m search._local_worker SPEC_JSON``.

Started by :mod:`search.local`; reads the run's resolved ``OUT/config.yaml``, loads the
study (created by the pipeline) and works until it holds N COMPLETE trials. It dies with its
parent (``PR_SET_PDEATHSIG``), so killing a search leaves RUNNING trials for the heartbeat
check, never orphaned workers. Exit codes: 0 done, 3 gave up (every candidate rejected).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the heartbeat still catches us
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    _die_with_parent()
    logging.basicConfig(
        level=os.environ.get("PIKENAS_LOG", "WARNING").upper(),
        format=f"%(asctime)s worker {os.getpid()} %(levelname)s %(name)s: %(message)s",
    )
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    import optuna

    from results.storage import open_storage
    from search._journal import buffered
    from search.config import load_config
    from search.local import GAVE_UP_EXIT
    from search.objective import make_evaluator
    from search.remote_worker import ask_lock_for
    from search.samplers import make_sampler
    from search.worker import work

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = load_config(Path(spec["out"]) / "config.yaml", check_references=False)
    threads = int(spec["threads"])
    if spec["evaluator"].startswith("proxy"):
        import torch

        torch.set_num_threads(threads)
    storage = buffered(open_storage(spec["storage"]))
    sampler = make_sampler(config.search.sampler, spec["seed"], config.search.population_size)
    study = optuna.load_study(study_name=spec["study"], storage=storage, sampler=sampler)
    lock = ask_lock_for(spec["storage"], spec["study"])
    if lock is None:  # e.g. SQLite: all local workers share this machine, so a file lock works
        from search.worker import FileLock

        lock = FileLock(Path(spec["out"]) / "ask.lock")
    try:
        summary = work(
            study,
            config.space,
            make_evaluator(spec["evaluator"], config, threads),
            int(spec["trials"]),
            max_ace=config.max_ace,
            ask_lock=lock,
            heartbeat_interval=float(spec["heartbeat_interval"]),
            stale_after=float(spec["stale_after"]),
        )
    finally:
        close = getattr(lock, "close", None)
        if close is not None:
            close()
    logger.info("done: %s", summary)
    if summary.gave_up:
        print(f"gave up: {summary.gave_up}", file=sys.stderr)
        return GAVE_UP_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
