"""The local backend: N worker processes on this machine, each running :mod:`search.worker`.

Each worker gets its :class:`~search.spec.WorkerSpec` (its own seed, ``max(1, cores // N)``
torch threads, so that workers never oversubscribe the cores; 1 thread for tiny inputs) as JSON on
stdin, and its log goes to ``OUT/logs/worker-<i>.log``. This process only watches: it reports
progress snapshots of the study, restarts a worker that crashed (at most :data:`MAX_RESTARTS`
times in all) and returns once every worker has stopped. What the workers did, and why one
stopped early, it reads from their :class:`~results.record.WorkerReport` in the study.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import optuna

from pikenas.results.record import worker_reports
from pikenas.results.storage import open_study
from pikenas.search.progress import Snapshot, snapshot
from pikenas.search.spec import (
    RunRequest,
    WorkerSpec,
    available_cores,
    threads_per_worker,
    worker_environment,
)
from pikenas.space.errors import EvaluationError

__all__ = ["MAX_RESTARTS", "run_local", "stopped_early"]

logger = logging.getLogger(__name__)

MAX_RESTARTS = 3
_POLL_S = 0.5


def _start(request: RunRequest, index: int, spec: WorkerSpec) -> subprocess.Popen[bytes]:
    logs = request.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **worker_environment(spec.threads)}
    with open(logs / f"worker-{index}.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "pikenas.search.worker"],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(request.out),
        )
    assert process.stdin is not None
    process.stdin.write(spec.model_dump_json().encode())
    process.stdin.close()
    return process


def stopped_early(study: optuna.Study, request: RunRequest, final: Snapshot) -> EvaluationError:
    """The error of a run that ended below N COMPLETE trials, with its workers' reasons."""
    reasons = [report.gave_up or report.error or "" for report in worker_reports(study).values()]
    reason = next((text for text in reasons if text), "the workers stopped early")
    return EvaluationError(
        f"the study holds {final.complete} of {request.n_trials} COMPLETE trials: {reason}"
    )


def run_local(request: RunRequest, progress: Callable[[Snapshot], None] | None = None) -> None:
    """Run ``request.workers`` worker processes until the study holds N COMPLETE trials."""
    cores = available_cores()
    if request.workers > cores:
        logger.warning(
            "%d workers on %d cores: each gets 1 thread, the cores are oversubscribed",
            request.workers,
            cores,
        )
    threads = threads_per_worker(request.workers, cores, request.config.space.resolution)
    watcher = open_study(request.worker.storage, request.worker.study_name)
    specs = [request.worker.for_worker(index, threads) for index in range(request.workers)]
    workers = {index: _start(request, index, spec) for index, spec in enumerate(specs)}
    restarts = 0
    last_report = 0.0
    try:
        while workers:
            time.sleep(_POLL_S)
            for index, process in list(workers.items()):
                code = process.poll()
                if code is None:
                    continue
                del workers[index]
                if code == 0:
                    continue
                report = worker_reports(watcher).get(f"{socket.gethostname()}:{process.pid}")
                why = report.error if report is not None and report.error else "no report"
                log = request.out / "logs" / f"worker-{index}.log"
                if restarts >= MAX_RESTARTS:
                    raise EvaluationError(
                        f"worker {index} exited with code {code} after {restarts} restarts "
                        f"({why}); see {log}"
                    )
                restarts += 1
                logger.warning(
                    "worker %d exited with code %d (%s); restarting it", index, code, why
                )
                workers[index] = _start(request, index, specs[index])
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
        raise stopped_early(watcher, request, final)
