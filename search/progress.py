"""Progress of a search a person can rely on: a snapshot of the study, the work plan (every
rung of every trial weighted by its epochs) with an ETA from measured rates, and the display.

* :func:`snapshot` counts trials and the **work done**: the epochs each trial has trained (its
  last rung reached; a duplicate took its values without training and counts 0; a COMPLETE
  trial without rung results counts ``top_epochs``).
* :class:`WorkPlan` estimates the whole work of a search that must end with ``target`` trials
  at the top rung: with rungs ``r_0 < ... < r_k`` (epochs) and reduction ``eta``, about
  ``target * eta**(k - i)`` trials train the segment ``r_{i-1} .. r_i`` of rung ``i``; the
  remaining work is the work per top trial (the plan's, corrected by the measured one) times
  the top trials still missing. The ETA divides it by the work per second measured since the
  display started.
* :class:`ProgressDisplay`: on a terminal a bar (fixed width, readable at 80 columns) and a
  status line below it; elsewhere (a log file, a pipe) one plain line every
  :data:`PLAIN_INTERVAL_S` seconds. Phases after the search (full training of the winners, the
  outputs and exports) get their own bar. ``quiet`` shows nothing but errors.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

import optuna
from optuna.trial import TrialState

from pikenas.results.pareto import pareto_mask

__all__ = [
    "PLAIN_INTERVAL_S",
    "ProgressDisplay",
    "Snapshot",
    "WorkPlan",
    "format_duration",
    "snapshot",
]

#: seconds between the plain progress lines written when the output is not a terminal.
PLAIN_INTERVAL_S = 30.0
#: how many COMPLETE trials the plan's work per top trial weighs against the measured one.
PRIOR_TRIALS = 5


@dataclass(frozen=True)
class Snapshot:
    """``complete`` of ``target`` COMPLETE trials; ``pruned`` over budget, ``stopped`` at a rung
    of successive halving; ``front_size`` of the accuracy / ACE v2 front (distinct points);
    ``best_accuracy`` (proxy top-1) and ``lowest_ace_v2`` over COMPLETE trials; ``epochs_done``:
    epochs trained by all trials so far (see the module docstring)."""

    target: int
    complete: int = 0
    running: int = 0
    pruned: int = 0
    stopped: int = 0
    failed: int = 0
    front_size: int = 0
    best_accuracy: float = math.nan
    lowest_ace_v2: float = math.nan
    epochs_done: float = 0.0

    def line(self) -> str:
        """One line for logs and non-terminal output."""
        return (
            f"trials {self.complete}/{self.target} complete, {self.running} running, "
            f"{self.stopped} stopped at a rung, {self.pruned} over budget, {self.failed} failed; "
            f"front {self.front_size}; "
            f"best accuracy {self.best_accuracy:.4f}; lowest ACE v2 {self.lowest_ace_v2:.6g}"
        )

    def status(self) -> str:
        """The short status under the bar (< 80 columns for any realistic study)."""
        best = "-" if math.isnan(self.best_accuracy) else f"{100 * self.best_accuracy:.1f}%"
        low = "-" if math.isnan(self.lowest_ace_v2) else f"{self.lowest_ace_v2:.3g}"
        return (
            f"{self.complete}/{self.target} done, {self.running} running, {self.stopped} "
            f"stopped | front {self.front_size} | best {best} | min ACE v2 {low}"
        )


def _trial_epochs(trial: optuna.trial.FrozenTrial, top_epochs: int) -> float:
    attrs = trial.user_attrs
    if attrs.get("status") == "duplicate":
        return 0.0
    rungs = attrs.get("rungs")
    if isinstance(rungs, list) and rungs:
        last = rungs[-1]
        return float(last.get("epochs", 0)) if isinstance(last, dict) else 0.0
    return float(top_epochs) if trial.state == TrialState.COMPLETE else 0.0


def snapshot(study: optuna.Study, target: int, top_epochs: int = 1) -> Snapshot:
    """The counts of ``study`` now (``top_epochs``: the work of a COMPLETE trial without rung
    results, i.e. the proxy epochs of a study without successive halving)."""
    trials = study.get_trials(deepcopy=False)
    counts = {state: 0 for state in TrialState}
    points: set[tuple[float, float]] = set()
    stopped = 0
    epochs = 0.0
    for trial in trials:
        counts[trial.state] += 1
        stopped += trial.state == TrialState.PRUNED and trial.user_attrs.get("status") == "stopped"
        epochs += _trial_epochs(trial, top_epochs)
        if trial.state == TrialState.COMPLETE and trial.values is not None:
            points.add((float(trial.values[0]), float(trial.values[1])))
    accuracy = [point[0] for point in points]
    ace_v2 = [point[1] for point in points]
    return Snapshot(
        target=target,
        complete=counts[TrialState.COMPLETE],
        running=counts[TrialState.RUNNING],
        pruned=counts[TrialState.PRUNED] - stopped,
        stopped=stopped,
        failed=counts[TrialState.FAIL],
        front_size=int(pareto_mask(accuracy, ace_v2).sum()),
        best_accuracy=max(accuracy, default=math.nan),
        lowest_ace_v2=min(ace_v2, default=math.nan),
        epochs_done=epochs,
    )


@dataclass(frozen=True)
class WorkPlan:
    """The work (epochs) of a search of ``target`` top-rung trials over ``rungs`` (epochs,
    increasing; one rung = a fixed budget) with successive halving's ``reduction``."""

    target: int
    rungs: tuple[int, ...] = (1,)
    reduction: float = 3.0
    #: what one unit of work is: ``epochs`` (successive halving) or ``trials`` (a fixed budget,
    #: where :func:`snapshot` counts one unit per COMPLETE trial)
    unit: str = "epochs"

    @classmethod
    def for_search(cls, target: int, fidelity: Any = None) -> WorkPlan:
        """The plan of a search config's ``fidelity`` section (None: one fixed proxy budget)."""
        if fidelity is None:
            return cls(target=target, unit="trials")
        return cls(target=target, rungs=tuple(fidelity.rungs), reduction=fidelity.reduction)

    @property
    def per_top_trial(self) -> float:
        """Epochs the plan spends per trial that reaches the top rung (stopped ones included)."""
        total, previous = 0.0, 0
        last = len(self.rungs) - 1
        for index, epochs in enumerate(self.rungs):
            total += self.reduction ** (last - index) * (epochs - previous)
            previous = epochs
        return total

    def work_per_top_trial(self, snap: Snapshot) -> float:
        """Epochs per top trial: the plan's, corrected by what the study measured so far (work
        done / COMPLETE trials, weighted as :data:`PRIOR_TRIALS` trials count the plan)."""
        return (PRIOR_TRIALS * self.per_top_trial + snap.epochs_done) / (
            PRIOR_TRIALS + snap.complete
        )

    def total(self, snap: Snapshot) -> float:
        """Work done plus the estimate of what remains (never below the work done)."""
        missing = max(0, snap.target - snap.complete)
        return snap.epochs_done + missing * self.work_per_top_trial(snap)

    def fraction(self, snap: Snapshot) -> float:
        total = self.total(snap)
        return 1.0 if total <= 0 else min(1.0, snap.epochs_done / total)


def format_duration(seconds: float) -> str:
    """``1:02:03`` / ``2:03``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class _Rate:
    """Work per second measured since the first observation (``clock``: seconds)."""

    start_time: float | None = None
    start_work: float = 0.0
    rate: float = math.nan

    def observe(self, now: float, work: float) -> None:
        if self.start_time is None:
            self.start_time, self.start_work = now, work
            return
        elapsed = now - self.start_time
        if elapsed > 0 and work > self.start_work:
            self.rate = (work - self.start_work) / elapsed

    def eta(self, remaining: float) -> float:
        return remaining / self.rate if self.rate > 0 else math.nan


@dataclass
class ProgressDisplay:
    """The progress of one ``pikenas search`` on ``stream`` (default stderr).

    Use as a context manager; pass :meth:`update` as the pipeline's progress callback and
    :meth:`phase` as its ``on_phase``. ``terminal=None`` asks the stream.
    """

    plan: WorkPlan
    stream: IO[str] | None = None
    terminal: bool | None = None
    quiet: bool = False
    clock: Any = time.monotonic
    _rate: _Rate = field(default_factory=_Rate)
    _progress: Any = None
    _task: Any = None
    _phase_task: Any = None
    _last_plain: float = -math.inf
    _started: float = 0.0
    _phase_started: float = 0.0
    _phase_total: int | None = None
    _plain_done: bool = False
    _log_streams: list[tuple[logging.StreamHandler, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.stream is None:
            self.stream = sys.stderr
        if self.terminal is None:
            self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())

    def __enter__(self) -> ProgressDisplay:
        self._started = self.clock()
        if self.quiet or not self.terminal:
            return self
        from rich.console import Console

        self._progress = _BarWithStatus(
            console=Console(file=self.stream, force_terminal=True), transient=False
        )
        self._progress.start()
        self._log_streams = _route_logs(self.stream, self._progress.console)
        self._task = self._progress.add_task("search", total=1000, eta="measuring")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            for handler, stream in self._log_streams:
                handler.setStream(stream)
            self._progress.stop()
            self._progress = None

    def _write(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, highlight=False, markup=False)
        elif not self.quiet:
            assert self.stream is not None
            self.stream.write(text + "\n")
            self.stream.flush()

    def update(self, snap: Snapshot) -> None:
        """A new snapshot of the study (called about once a second by the backends)."""
        now = self.clock()
        self._rate.observe(now, snap.epochs_done)
        total = self.plan.total(snap)
        eta = format_duration(self._rate.eta(total - snap.epochs_done))
        if snap.complete >= snap.target:
            eta = "0:00"
        fraction = self.plan.fraction(snap)
        if self._progress is not None:
            self._progress.status = snap.status()
            self._progress.update(self._task, completed=round(1000 * fraction), eta=eta)
            self._progress.refresh()
        elif not self.quiet and (
            now - self._last_plain >= PLAIN_INTERVAL_S
            or (snap.complete >= snap.target and not self._plain_done)
        ):
            self._plain_done = snap.complete >= snap.target
            self._last_plain = now
            self._write(
                f"search {100 * fraction:3.0f}% ({snap.epochs_done:.0f}/{total:.0f} "
                f"{self.plan.unit}), "
                f"elapsed {format_duration(now - self._started)}, ETA {eta}: {snap.status()}"
            )

    def phase(self, text: str, done: int | None = None, total: int | None = None) -> None:
        """A step after the search: a line, and while ``done`` of ``total`` steps (e.g. the
        winners fully trained so far) a bar with an ETA from the steps' measured times."""
        now = self.clock()
        if total and self._phase_total != total:  # a new counted step: its clock starts
            self._phase_started, self._phase_total = now, total
        eta = ""
        if total and done:
            eta = format_duration((now - self._phase_started) / done * (total - done))
        if self._progress is None:
            self._write(text + (f" (ETA {eta})" if eta else ""))
            return
        self._progress.status = text
        if self._phase_task is None:
            self._progress.update(self._task, completed=1000, eta="0:00")
            self._phase_task = self._progress.add_task("finish", total=1, eta="")
        self._progress.update(
            self._phase_task,
            total=total or None,  # None: rich pulses the bar (a step of unknown length)
            completed=(done or 0) if total else 0,
            eta=eta or "?",
        )
        self._progress.refresh()


class _ConsoleLines:
    """A file-like object whose lines go through a rich console (above its live display)."""

    def __init__(self, console: Any) -> None:
        self._console = console

    def write(self, text: str) -> int:
        if text.strip():
            self._console.print(text.rstrip("\n"), highlight=False, markup=False)
        return len(text)

    def flush(self) -> None:
        pass


def _route_logs(stream: Any, console: Any) -> list[tuple[logging.StreamHandler, Any]]:
    """Send the root logger's handlers that write to ``stream`` through ``console`` while the
    live display runs (else a log line tears the bar); returns what to restore."""
    routed = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
            routed.append((handler, handler.setStream(_ConsoleLines(console))))
    return routed


class _BarWithStatus:
    """A rich Progress with one status line below the bars (rich's documented pattern of
    overriding ``get_renderables``), created lazily so that importing this module stays cheap."""

    def __new__(cls, **kwargs: Any) -> Any:
        from rich.progress import (
            BarColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.text import Text

        class _Progress(Progress):
            status = ""

            def get_renderables(self):  # noqa: ANN202 - rich's protocol
                yield self.make_tasks_table(self.tasks)
                yield Text(self.status, no_wrap=True, overflow="ellipsis")

        return _Progress(
            TextColumn("{task.description:<8}"),
            BarColumn(bar_width=24),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            **kwargs,
        )
