"""The worker loop every storage-sharing backend runs: ask, evaluate, tell, until the study
holds N COMPLETE trials; with a pikenas heartbeat so trials of dead workers are failed and
their candidates retried.

Counting: before each ask the worker counts COMPLETE and RUNNING trials; it stops once
``complete >= N`` and waits (without asking) while ``complete + running >= N``, because a
running trial may still fail or be rejected. With an ``ask_lock`` shared by all workers (the
local backend's lock file) the count and the ask are atomic, so the study ends with exactly N
COMPLETE trials; without one (workers on several machines) it overshoots by at most the trials
asked at the same instant.

Heartbeat: the worker records ``worker`` = ``host:pid`` on each trial it runs and a thread
refreshes the trial's system attribute :data:`HEARTBEAT_ATTR` (epoch seconds) every
``heartbeat_interval`` seconds. A RUNNING trial is stale when its worker is a dead process on
this host, or when its heartbeat (or start) is older than ``stale_after`` seconds. Workers fail
stale trials when they start and whenever they wait, and enqueue their genome again
(``retry_of``; at most :data:`MAX_RETRIES` times, so a candidate that kills its worker cannot
loop forever). This works with any Optuna storage (journal files have no Optuna heartbeat).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from search._journal import flush
from search.objective import CandidateEvaluator, run_trial, set_trial_user_attrs
from space.searchspace import SearchSpace

__all__ = [
    "HEARTBEAT_ATTR",
    "MAX_RETRIES",
    "WorkerSummary",
    "Heartbeat",
    "FileLock",
    "worker_label",
    "count_trials",
    "recover_stale_trials",
    "stale_reason",
    "work",
    "max_rejected",
]

logger = logging.getLogger(__name__)

HEARTBEAT_ATTR = "pikenas:heartbeat"
MAX_RETRIES = 2


def worker_label() -> str:
    """``host:pid`` of this process (the ``worker`` user attribute)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class FileLock(AbstractContextManager["FileLock"]):
    """An exclusive ``fcntl`` lock on ``path``, held inside ``with`` (released by the kernel
    when the process dies, so a killed worker never leaves it locked)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Heartbeat:
    """A daemon thread that refreshes :data:`HEARTBEAT_ATTR` of the trial being run."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval_s: float = 5.0) -> None:
        self.storage = storage
        self.interval_s = interval_s
        self._trial_id: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pikenas-heartbeat", daemon=True)
        self._thread.start()

    @property
    def trial_id(self) -> int | None:
        return self._trial_id

    def watch(self, trial_id: int | None) -> None:
        """Beat for ``trial_id`` from now on (``None``: for no trial)."""
        with self._lock:
            self._trial_id = trial_id

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                trial_id = self._trial_id
                if trial_id is None:
                    continue
                try:
                    self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
                except UpdateFinishedTrialError:
                    pass  # told just now
                except Exception as exc:  # noqa: BLE001 - a storage hiccup must not kill the run
                    logger.warning("heartbeat of trial id %d failed: %s", trial_id, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 1)


@dataclass
class WorkerSummary:
    """What one worker did: trials it told, by state, and stale trials it failed."""

    label: str = field(default_factory=worker_label)
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    recovered: list[int] = field(default_factory=list)
    gave_up: str | None = None


def max_rejected(n_trials: int) -> int:
    """PRUNED + FAIL trials after which a search gives up (everything rejected: a too small
    ``max_ace``, a data set no candidate fits)."""
    return 10 * n_trials + 50


def count_trials(trials: list[FrozenTrial]) -> tuple[int, int]:
    """``(complete, running)``."""
    complete = sum(1 for trial in trials if trial.state == TrialState.COMPLETE)
    running = sum(1 for trial in trials if trial.state == TrialState.RUNNING)
    return complete, running


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _last_beat(trial: FrozenTrial) -> float:
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    if isinstance(beat, (int, float)):
        return float(beat)
    start = trial.datetime_start or datetime.now()
    return start.timestamp()  # Optuna keeps naive local datetimes


def stale_reason(
    trial: FrozenTrial, *, stale_after: float, own_trial_id: int | None = None
) -> str | None:
    """Why RUNNING ``trial`` has no live worker, or None when it may still be running."""
    label = str(trial.user_attrs.get("worker", ""))
    host, _, pid_text = label.rpartition(":")
    if host == socket.gethostname() and pid_text.isdigit():
        pid = int(pid_text)
        if pid == os.getpid():
            if trial._trial_id != own_trial_id:
                return f"worker {label} (this process, an earlier run) no longer runs it"
        elif not _pid_alive(pid):
            return f"worker {label} is gone"
    age = time.time() - _last_beat(trial)
    if age > stale_after:
        who = f"worker {label}" if label else "its worker"
        return f"no heartbeat from {who} for {age:.0f} s"
    return None


def recover_stale_trials(
    study: optuna.Study,
    *,
    stale_after: float = 60.0,
    own_trial_id: int | None = None,
) -> list[int]:
    """Fail every stale RUNNING trial and enqueue its genome again; the numbers failed here.

    Races between workers are safe: a trial can be finished once, and only the worker whose
    FAIL went through enqueues the retry.
    """
    storage = study._storage
    recovered: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial, stale_after=stale_after, own_trial_id=own_trial_id)
        if reason is None:
            continue
        try:
            set_trial_user_attrs(
                storage, trial._trial_id, {"status": "failed", "reason": reason[:500]}
            )
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker failed it (or its worker finished it) first
        recovered.append(trial.number)
        logger.warning("trial %d failed: %s", trial.number, reason)
        _enqueue_retry(study, trial)
    return recovered


def _enqueue_retry(study: optuna.Study, trial: FrozenTrial) -> None:
    retries = int(trial.user_attrs.get("retries", 0)) + 1
    if retries > MAX_RETRIES:
        logger.warning("trial %d: retried %d times already; giving up", trial.number, MAX_RETRIES)
        return
    if not trial.params:
        return  # nothing was sampled yet: the sampler proposes afresh anyway
    user_attrs: dict[str, Any] = {"retry_of": trial.number, "retries": retries}
    if "baseline" in trial.user_attrs:
        user_attrs["baseline"] = trial.user_attrs["baseline"]
    study.enqueue_trial(dict(trial.params), user_attrs=user_attrs, skip_if_exists=False)


def work(
    study: optuna.Study,
    space: SearchSpace,
    evaluator: CandidateEvaluator,
    n_trials: int,
    *,
    max_ace: float | None = None,
    ask_lock: AbstractContextManager[Any] | None = None,
    heartbeat_interval: float = 5.0,
    stale_after: float = 60.0,
    poll_s: float = 0.25,
    should_stop: Callable[[], bool] | None = None,
) -> WorkerSummary:
    """Ask / evaluate / tell until ``study`` holds ``n_trials`` COMPLETE trials (see the
    module docstring); returns what this worker did."""
    summary = WorkerSummary()
    lock = ask_lock if ask_lock is not None else contextlib.nullcontext()
    heartbeat = Heartbeat(study._storage, heartbeat_interval)
    last_recovery = -math.inf
    try:
        while should_stop is None or not should_stop():
            now = time.monotonic()
            trial = None
            with lock:
                if now - last_recovery > max(1.0, heartbeat_interval):
                    summary.recovered += recover_stale_trials(study, stale_after=stale_after)
                    last_recovery = now
                trials = study.get_trials(deepcopy=False)
                complete, running = count_trials(trials)
                if complete >= n_trials:
                    break
                rejected = sum(1 for t in trials if t.state in (TrialState.PRUNED, TrialState.FAIL))
                if rejected >= max_rejected(n_trials):
                    summary.gave_up = (
                        f"{rejected} trials were rejected or failed for {complete} complete ones; "
                        "check the trials' reason attribute (raise max_ace? a broken data set?)"
                    )
                    logger.error("giving up: %s", summary.gave_up)
                    break
                if complete + running < n_trials:
                    trial = study.ask()
                    study._storage.set_trial_user_attr(trial._trial_id, "worker", summary.label)
                    flush(study._storage)  # the worker label must be visible at once
                    heartbeat.watch(trial._trial_id)
            if trial is None:
                time.sleep(poll_s)
                continue
            try:
                outcome = run_trial(study, trial, space, evaluator, max_ace=max_ace)
            finally:
                heartbeat.watch(None)
            if outcome.state == "COMPLETE":
                summary.complete += 1
            elif outcome.state == "PRUNED":
                summary.pruned += 1
            else:
                summary.failed += 1
    finally:
        heartbeat.stop()
    return summary
