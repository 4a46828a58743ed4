"""The one trial loop every backend runs: :func:`work` asks, costs, checks, evaluates and tells
until the study holds N COMPLETE trials.

Exactly N: under the study's ask lock (:mod:`search.lock`) the worker counts COMPLETE and
RUNNING trials; it stops once ``complete >= N`` and waits (without asking) while
``complete + running >= N``, because a running trial may still fail or be rejected. It gives up
when :func:`max_rejected` trials were PRUNED or FAIL (every candidate over budget, a broken data
set).

No archid trained twice: once a candidate is costed and within budget, the worker *claims* its
archid under the lock: an already trained trial with that archid makes it a duplicate (its values
are reused); a RUNNING trial training it makes the worker wait for that one; else the worker
records the costed attributes on its trial (which is the claim) and trains. The archids come
from an index the worker keeps up to date from the trials it reads anyway.

Dead workers: the worker records ``worker`` = ``host:pid`` on each trial it runs, and a thread
refreshes the trial's :data:`~results.record.HEARTBEAT_ATTR` every ``heartbeat_interval``
seconds. A RUNNING trial is stale when its worker is a dead process on this host, or when its
heartbeat (or start) is older than ``stale_after`` seconds. Workers fail stale trials when they
start and whenever they wait, and enqueue again the genome of a trial that had got as far as
its architecture, or of an enqueued one (its fixed parameters survive any kill): ``retry_of``,
at most :data:`MAX_RETRIES` times, so a candidate that kills its worker cannot loop forever.

Successive halving (``fidelity``): a trial trains rung by rung
(:func:`evaluators.candidate.run_rungs`, decided by :class:`search.halving.TrialRungs`); one
stopped at a rung is PRUNED with status ``stopped`` and is not a rejection. ``N`` still counts
COMPLETE trials, i.e. trials that reached the top rung: a worker asks while
``complete + finishing < N``, ``finishing`` being the RUNNING trials promoted into the top rung
and the RUNNING zoo baselines (always trained to the top rung, :mod:`search.trial`), and no
trial is promoted once that sum is ``N``. A stopped architecture proposed again is decided
afresh from its stored rung results, and a retried one continues from them and from its
checkpoint (``checkpoints``).

When it stops, the worker stores its :class:`~results.record.WorkerReport` in the study.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from pikenas.evaluators.candidate import CandidateEvaluator, Claim, Evaluation
from pikenas.results.record import HEARTBEAT_ATTR, TrialRecord, WorkerReport, record_worker_report
from pikenas.search._journal import flush
from pikenas.search.halving import RungIndex, TrialRungs, checkpoint_folder
from pikenas.search.lock import AskLock, NoLock
from pikenas.search.trial import record_of, run_trial, set_attrs

if TYPE_CHECKING:
    from pikenas.search.halving import FidelityConfig
    from pikenas.space.searchspace import SearchSpace

__all__ = ["MAX_RETRIES", "max_rejected", "recover_stale_trials", "stale_reason", "work"]

logger = logging.getLogger(__name__)

MAX_RETRIES = 2
#: Optuna's trial system attribute holding an enqueued trial's fixed parameters.
_FIXED_PARAMS = "fixed_params"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: ``(study name, trial id)`` of the trials this process runs now (any of its loops)
_RUNNING_HERE: set[tuple[str, int]] = set()


def max_rejected(n_trials: int) -> int:
    """PRUNED + FAIL trials after which a search gives up."""
    return 10 * n_trials + 50


def worker_label() -> str:
    """``host:pid`` of this process (the ``worker`` trial attribute)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class _Heartbeat:
    """A daemon thread that refreshes :data:`HEARTBEAT_ATTR` of the trial being run."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval_s: float) -> None:
        self.storage = storage
        self.interval_s = interval_s
        self._trial_id: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pikenas-heartbeat", daemon=True)
        self._thread.start()

    def watch(self, trial_id: int | None) -> None:
        with self._lock:
            self._trial_id = trial_id

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                if self._trial_id is None:
                    continue
                try:
                    self.storage.set_trial_system_attr(self._trial_id, HEARTBEAT_ATTR, time.time())
                except UpdateFinishedTrialError:
                    pass  # told just now
                except Exception as exc:  # noqa: BLE001 - a storage hiccup must not kill the run
                    logger.warning("heartbeat of trial id %d failed: %s", self._trial_id, exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 1)


class _StudyView:
    """Counts and archids of a study, updated from each ``get_trials`` (finished trials are
    read once: a trial never leaves a finished state); with successive halving its
    :class:`RungIndex` too. ``finishing``: RUNNING trials that will be COMPLETE unless they
    fail (all of them without successive halving)."""

    def __init__(self, fidelity: FidelityConfig | None = None) -> None:
        self.finished: set[int] = set()
        self.complete = 0
        self.rejected = 0
        self.running = 0
        self.trained: dict[str, tuple[int, list[float]]] = {}
        self.training: dict[str, int] = {}
        self.running_duplicates = 0
        self.rungs = RungIndex(fidelity) if fidelity is not None else None

    @property
    def finishing(self) -> int:
        if self.rungs is None:
            return self.running
        return self.rungs.finishing + self.running_duplicates

    def update(self, trials: list[FrozenTrial]) -> _StudyView:
        self.running = 0
        self.running_duplicates = 0
        self.training = {}
        if self.rungs is not None:
            self.rungs.start_running()
        for trial in trials:
            if trial.number in self.finished:
                continue
            if trial.state in _FINISHED:
                self.finished.add(trial.number)
                record = TrialRecord.of(trial)
                if self.rungs is not None and record.rungs:
                    self.rungs.add(trial.number, record, running=False)
                if trial.state != TrialState.COMPLETE:
                    # a stopped trial is no rejection, unless it trained nothing new
                    fresh = record.status == "stopped" and record.duplicate_of is None
                    self.rejected += not fresh
                    continue
                self.complete += 1
                if record.status == "ok" and record.archid and trial.values:
                    self.trained.setdefault(record.archid, (trial.number, list(trial.values)))
            elif trial.state == TrialState.RUNNING:
                self.running += 1
                record = TrialRecord.of(trial)  # claimed, or trained and about to be told
                self.running_duplicates += record.status == "duplicate"
                if self.rungs is not None and (record.rungs or record.baseline is not None):
                    self.rungs.add(trial.number, record, running=True)
                if record.archid and record.status not in ("failed", "over_budget"):
                    self.training.setdefault(record.archid, trial.number)
        return self


def stale_reason(
    trial: FrozenTrial, *, stale_after: float, study_name: str = "", locked: bool = False
) -> str | None:
    """Why RUNNING ``trial`` (of ``study_name``) has no live worker, or None when it may still
    be running. ``locked``: the caller holds the study's ask lock, under which every worker
    labels the trial it asks, so a trial without a label lost its worker in between."""
    label = TrialRecord.of(trial).worker or ""
    if not label and locked:
        return "its worker died between asking for it and recording itself"
    host, _, pid_text = label.rpartition(":")
    if host == socket.gethostname() and pid_text.isdigit():
        pid = int(pid_text)
        if pid == os.getpid():
            if (study_name, trial._trial_id) in _RUNNING_HERE:
                return None
            return f"worker {label} (this process, an earlier run) no longer runs it"
        if not _pid_alive(pid):
            return f"worker {label} is gone"
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    start = trial.datetime_start or datetime.now()  # Optuna keeps naive local datetimes
    age = time.time() - (float(beat) if isinstance(beat, int | float) else start.timestamp())
    if age > stale_after:
        return f"no heartbeat from {f'worker {label}' if label else 'its worker'} for {age:.0f} s"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def recover_stale_trials(
    study: optuna.Study, *, stale_after: float, locked: bool = False
) -> list[int]:
    """Fail every stale RUNNING trial (:func:`stale_reason`) and enqueue its candidate again;
    the numbers failed here. A trial is finished once, so only the worker whose FAIL went
    through enqueues the retry. Crash-safe: a trial due a retry is marked ``retry_due`` before
    it is failed, and a marked trial without its retry (a worker killed in between) gets it."""
    storage = study._storage
    recovered: list[int] = []
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        reason = stale_reason(
            trial, stale_after=stale_after, study_name=study.study_name, locked=locked
        )
        if reason is None:
            continue
        due = True if _retry_genome(trial) is not None else None
        failed = TrialRecord(status="failed", reason=reason[:500], retry_due=due)
        try:
            set_attrs(storage, trial._trial_id, failed.to_attrs())
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another worker failed it (or its worker finished it) first
        recovered.append(trial.number)
        logger.warning("trial %d failed: %s", trial.number, reason)
    retried = {TrialRecord.of(trial).retry_of for trial in trials}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if TrialRecord.of(trial).retry_due is True and trial.number not in retried:
            _enqueue_retry(study, trial)
    return recovered


def _retry_genome(trial: FrozenTrial) -> dict | None:
    """The genome to retry a stale trial with: an enqueued trial's fixed parameters (they
    survive any kill), or the parameters of a trial that had got as far as its architecture;
    ``None`` when it died earlier (the sampler proposes afresh) or was retried enough."""
    old = TrialRecord.of(trial)
    if (old.retries or 0) + 1 > MAX_RETRIES:
        return None
    fixed = trial.system_attrs.get(_FIXED_PARAMS)
    if isinstance(fixed, dict) and fixed:
        return {**trial.params, **fixed}
    return dict(trial.params) if old.arch is not None else None


def _enqueue_retry(study: optuna.Study, trial: FrozenTrial) -> None:
    old = TrialRecord.of(trial)
    genome = _retry_genome(trial)
    if genome is None:
        return
    retries = (old.retries or 0) + 1
    retry = TrialRecord(retry_of=trial.number, retries=retries, baseline=old.baseline)
    study.enqueue_trial(genome, user_attrs=retry.to_attrs(), skip_if_exists=False)


def work(
    study: optuna.Study,
    space: SearchSpace,
    evaluator: CandidateEvaluator,
    n_trials: int,
    *,
    max_ace: float | None = None,
    fidelity: FidelityConfig | None = None,
    checkpoints: str | Path | None = None,
    ask_lock: AskLock | None = None,
    heartbeat_interval: float = 5.0,
    stale_after: float = 60.0,
    poll_s: float = 0.25,
) -> WorkerReport:
    """Ask / cost / check / evaluate / tell until ``study`` holds ``n_trials`` COMPLETE trials
    (see the module docstring); returns (and stores) what this worker did. ``fidelity``:
    successive halving, with the proxy checkpoints in ``checkpoints/<study name>/``."""
    label = worker_label()
    lock = ask_lock if ask_lock is not None else NoLock()
    locked = not isinstance(lock, NoLock)  # recovery runs under the lock
    storage = study._storage
    heartbeat = _Heartbeat(storage, heartbeat_interval)
    view = _StudyView(fidelity)
    folder = checkpoint_folder(checkpoints, study.study_name)
    tally = {"complete": 0, "pruned": 0, "stopped": 0, "failed": 0}
    recovered: list[int] = []
    gave_up = None
    last_recovery = -math.inf

    def recover_if_due() -> None:
        nonlocal last_recovery
        if time.monotonic() - last_recovery > max(1.0, heartbeat_interval):
            recovered.extend(recover_stale_trials(study, stale_after=stale_after, locked=locked))
            last_recovery = time.monotonic()

    def claim_for(trial: optuna.trial.Trial, written: dict) -> Claim:
        def claim(costed: Evaluation) -> tuple[int, list[float] | None] | None:
            record = record_of(costed)
            while True:
                with lock:
                    recover_if_due()
                    view.update(study.get_trials(deepcopy=False))
                    done = view.trained.get(record.archid or "")
                    if done is not None and view.rungs is not None:
                        # a duplicate counts at once (it skips the rungs' promotion check)
                        if view.complete + view.finishing >= n_trials:
                            return done[0], None
                        mark = TrialRecord(status="duplicate", duplicate_of=done[0]).to_attrs()
                        written.update(mark)
                        set_attrs(storage, trial._trial_id, mark)
                        flush(storage)
                    if done is not None:
                        return done
                    if view.training.get(record.archid or "", trial.number) == trial.number:
                        written.update(record.to_attrs())
                        set_attrs(storage, trial._trial_id, record.to_attrs())
                        flush(storage)  # the claim must be visible at once
                        return None
                time.sleep(poll_s)  # another trial trains this archid: reuse its values

        return claim

    def refresh() -> tuple[int, int]:
        recover_if_due()
        view.update(study.get_trials(deepcopy=False))
        return view.complete, view.finishing

    def rungs_for(trial: optuna.trial.Trial, baseline: str | None) -> TrialRungs | None:
        if fidelity is None or view.rungs is None:
            return None
        return TrialRungs(
            study,
            trial._trial_id,
            trial.number,
            fidelity=fidelity,
            index=view.rungs,
            refresh=refresh,
            lock=lock,
            n_trials=n_trials,
            checkpoints=folder,
            baseline=baseline is not None,
        )

    try:
        while True:
            trial = None
            with lock:
                recover_if_due()
                view.update(study.get_trials(deepcopy=False))
                if view.complete >= n_trials:
                    break
                if view.rejected >= max_rejected(n_trials):
                    gave_up = (
                        f"{view.rejected} trials were rejected or failed for {view.complete} "
                        "complete ones; check the trials' reason attribute (raise max_ace? a "
                        "broken data set?)"
                    )
                    logger.error("giving up: %s", gave_up)
                    break
                if view.complete + view.finishing < n_trials:
                    trial = study.ask()
                    _RUNNING_HERE.add((study.study_name, trial._trial_id))
                    set_attrs(storage, trial._trial_id, TrialRecord(worker=label).to_attrs())
                    flush(storage)  # the worker label must be visible at once
                    heartbeat.watch(trial._trial_id)
            if trial is None:
                time.sleep(poll_s)
                continue
            try:
                written: dict = {}
                claim = claim_for(trial, written)
                baseline = TrialRecord.from_attrs(trial.user_attrs).baseline
                rungs = rungs_for(trial, baseline)
                outcome = run_trial(
                    study, trial, space, evaluator, max_ace, claim, written, rungs, baseline
                )
            finally:
                heartbeat.watch(None)
                _RUNNING_HERE.discard((study.study_name, trial._trial_id))
            key = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned"}
            stopped = outcome.record.status == "stopped"
            tally["stopped" if stopped else key.get(outcome.state, "failed")] += 1
    finally:
        heartbeat.stop()
    report = WorkerReport(label=label, recovered=tuple(recovered), gave_up=gave_up, **tally)
    record_worker_report(study, report)
    return report
