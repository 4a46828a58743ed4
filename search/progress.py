"""A snapshot of a running study for progress displays: counts, front size, best values."""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from pikenas.results.pareto import pareto_mask

__all__ = ["Snapshot", "snapshot"]


@dataclass(frozen=True)
class Snapshot:
    """``complete`` of ``target`` COMPLETE trials; ``pruned`` over budget, ``stopped`` at a rung
    of successive halving; ``front_size`` of the accuracy / ACE v2 front (distinct points);
    ``best_accuracy`` (proxy top-1) and ``lowest_ace_v2`` over COMPLETE trials."""

    target: int
    complete: int = 0
    running: int = 0
    pruned: int = 0
    stopped: int = 0
    failed: int = 0
    front_size: int = 0
    best_accuracy: float = math.nan
    lowest_ace_v2: float = math.nan

    def line(self) -> str:
        """One line for logs and non-terminal output."""
        return (
            f"trials {self.complete}/{self.target} complete, {self.running} running, "
            f"{self.stopped} stopped at a rung, {self.pruned} over budget, {self.failed} failed; "
            f"front {self.front_size}; "
            f"best accuracy {self.best_accuracy:.4f}; lowest ACE v2 {self.lowest_ace_v2:.6g}"
        )


def snapshot(study: optuna.Study, target: int) -> Snapshot:
    trials = study.get_trials(deepcopy=False)
    counts = {state: 0 for state in TrialState}
    points: set[tuple[float, float]] = set()
    stopped = 0
    for trial in trials:
        counts[trial.state] += 1
        stopped += trial.state == TrialState.PRUNED and trial.user_attrs.get("status") == "stopped"
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
    )
