"""A snapshot of a running study for progress displays: counts, front size, best values."""

from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

__all__ = ["Snapshot", "snapshot", "front_points"]


@dataclass(frozen=True)
class Snapshot:
    """``complete`` of ``target`` COMPLETE trials; ``front_size`` of the accuracy / ACE v2
    front; ``best_accuracy`` (proxy top-1) and ``lowest_ace_v2`` over COMPLETE trials."""

    target: int
    complete: int = 0
    running: int = 0
    pruned: int = 0
    failed: int = 0
    front_size: int = 0
    best_accuracy: float = math.nan
    lowest_ace_v2: float = math.nan

    def line(self) -> str:
        """One line for logs and non-terminal output."""
        return (
            f"trials {self.complete}/{self.target} complete, {self.running} running, "
            f"{self.pruned} over budget, {self.failed} failed; front {self.front_size}; "
            f"best accuracy {self.best_accuracy:.4f}; lowest ACE v2 {self.lowest_ace_v2:.6g}"
        )


def front_points(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The distinct non-dominated ``(accuracy, ace_v2)`` points (maximize, minimize)."""
    front: list[tuple[float, float]] = []
    best = -math.inf
    for accuracy, ace in sorted(set(points), key=lambda p: (p[1], -p[0])):
        if accuracy > best:
            front.append((accuracy, ace))
            best = accuracy
    return front


def snapshot(study: optuna.Study, target: int) -> Snapshot:
    trials = study.get_trials(deepcopy=False)
    points = [
        (float(t.values[0]), float(t.values[1]))
        for t in trials
        if t.state == TrialState.COMPLETE and t.values is not None and len(t.values) == 2
    ]
    return Snapshot(
        target=target,
        complete=sum(1 for t in trials if t.state == TrialState.COMPLETE),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
        pruned=sum(1 for t in trials if t.state == TrialState.PRUNED),
        failed=sum(1 for t in trials if t.state == TrialState.FAIL),
        front_size=len(front_points(points)),
        best_accuracy=max((p[0] for p in points), default=math.nan),
        lowest_ace_v2=min((p[1] for p in points), default=math.nan),
    )
