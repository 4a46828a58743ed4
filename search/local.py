"""The local backend: N worker processes on this machine sharing the run's Optuna storage.

Each worker (:mod:`search._local_worker`) is a fresh Python process with
``max(1, cores // N)`` torch threads (so N x threads <= cores: oversubscribing two cores was 7x
slower; 1 thread for tiny inputs such as 8x8 digits, see :func:`threads_per_worker`),
running :func:`search.worker.work` on the buffered journal ``OUT/study.log`` (or the
``--storage`` URL) under the run's ``fcntl`` ask lock, so the study ends with exactly N
COMPLETE trials. Workers die with this process (``PR_SET_PDEATHSIG``); their trials are then
failed by the next run's heartbeat check and retried. Worker logs go to ``OUT/logs/``.

This process only watches: it reports progress snapshots, restarts a crashed worker (at most
:data:`MAX_RESTARTS` times in all) and stops when every worker has finished.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from search.backends import ProgressCallback, RunRequest
from space.errors import EvaluationError

__all__ = [
    "MAX_RESTARTS",
    "GAVE_UP_EXIT",
    "SMALL_INPUT_RESOLUTION",
    "available_cores",
    "threads_per_worker",
    "run_local",
]

logger = logging.getLogger(__name__)

MAX_RESTARTS = 3
#: exit code of a worker that stopped because every candidate was rejected or failed.
GAVE_UP_EXIT = 3
_POLL_S = 0.5


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


#: inputs up to this many pixels a side train fastest on one torch thread: on 8x8 digits two
#: threads were 5x slower than one (thread synchronisation dominates such tiny feature maps).
SMALL_INPUT_RESOLUTION = 16


def threads_per_worker(
    workers: int, cores: int | None = None, resolution: int | None = None
) -> int:
    """Torch threads per worker: ``cores // workers`` (so ``workers x threads <= cores``, at
    least 1), but 1 for inputs of at most :data:`SMALL_INPUT_RESOLUTION` pixels a side."""
    if resolution is not None and resolution <= SMALL_INPUT_RESOLUTION:
        return 1
    return max(1, (cores or available_cores()) // max(1, workers))


def _worker_command(request: RunRequest, index: int, threads: int) -> list[str]:
    spec = {
        "out": str(request.out),
        "storage": request.storage_target,
        "study": request.study_name,
        "trials": request.n_trials,
        "seed": request.config.search.seed + index,
        "threads": threads,
        "evaluator": request.evaluator,
        "heartbeat_interval": request.heartbeat_interval,
        "stale_after": request.stale_after,
    }
    return [sys.executable, "-m", "search._local_worker", json.dumps(spec)]


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


def _start(request: RunRequest, index: int, threads: int) -> subprocess.Popen[bytes]:
    logs = request.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"worker-{index}.log", "ab") as log:
        return subprocess.Popen(
            _worker_command(request, index, threads),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_worker_env(threads),
            cwd=str(request.out),
        )


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def run_local(request: RunRequest, progress: ProgressCallback | None = None) -> None:
    """Run ``request.workers`` worker processes until the study holds N COMPLETE trials."""
    import optuna

    from results.storage import open_storage
    from search.progress import snapshot

    cores = available_cores()
    if request.workers > cores:
        logger.warning(
            "%d workers on %d cores: each gets 1 thread, the cores are oversubscribed",
            request.workers,
            cores,
        )
    threads = threads_per_worker(request.workers, cores, request.config.space.resolution)
    watcher = optuna.load_study(
        study_name=request.study_name, storage=open_storage(request.storage_target)
    )
    workers = {index: _start(request, index, threads) for index in range(request.workers)}
    restarts = 0
    gave_up: list[str] = []
    last_report = 0.0
    try:
        while workers:
            time.sleep(_POLL_S)
            for index, process in list(workers.items()):
                code = process.poll()
                if code is None:
                    continue
                del workers[index]
                log = request.out / "logs" / f"worker-{index}.log"
                if code == 0:
                    continue
                if code == GAVE_UP_EXIT:
                    gave_up.append(_log_tail(log, 2))
                    continue
                if restarts >= MAX_RESTARTS:
                    raise EvaluationError(
                        f"worker {index} exited with code {code} after {restarts} restarts; "
                        f"see {log}: {_log_tail(log)}"
                    )
                restarts += 1
                logger.warning("worker %d exited with code %d; restarting it", index, code)
                workers[index] = _start(request, index, threads)
            now = time.monotonic()
            if progress is not None and now - last_report >= 1.0:
                progress(snapshot(watcher, request.n_trials))
                last_report = now
    finally:
        for process in workers.values():
            process.terminate()
        for process in workers.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    final = snapshot(watcher, request.n_trials)
    if progress is not None:
        progress(final)
    if final.complete < request.n_trials:
        reason = gave_up[0] if gave_up else "the workers stopped early"
        raise EvaluationError(
            f"the study holds {final.complete} of {request.n_trials} COMPLETE trials: {reason}"
        )
