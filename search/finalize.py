"""After the search: full training of the Pareto winners and the proxy-vs-final rank correlation.

Winners: the COMPLETE, really evaluated trials (``status`` ``ok``) on the accuracy / ACE v2
front, best proxy accuracy first (ties: lower ACE v2), one per archid; the first K are trained
with the config's ``full`` budget by ``evaluators.training.train`` into ``OUT/final/trial-<N>``
(checkpointed: rerunning resumes an unfinished folder and reuses a finished one).

Where the results go: Optuna refuses to change a finished trial (``UpdateFinishedTrialError``
on every storage), so the final metrics cannot be trial user attributes. They are stored in the
study user attribute :data:`FINAL_RESULTS_ATTR`: ``{"<trial number>": {"final_accuracy",
"final_val_accuracy", "final_wall_s", "final_dir"}}`` (``final_accuracy`` is the test top-1),
and Kendall's tau-b between proxy (validation) and final (test) accuracy of the winners in
:data:`KENDALL_TAU_ATTR` (``None`` when undefined: fewer than two winners or a constant sample).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from results.trials import FINAL_RESULTS_ATTR, final_results
from space.arch import ArchConfig

__all__ = [
    "FINAL_RESULTS_ATTR",
    "KENDALL_TAU_ATTR",
    "FinalResult",
    "FinalizeSummary",
    "Trainer",
    "select_winners",
    "final_results",
    "finalize",
    "fake_trainer",
]

logger = logging.getLogger(__name__)

KENDALL_TAU_ATTR = "kendall_tau"

#: ``trainer(arch, out_dir) -> metrics`` with at least ``test_accuracy``, ``val_accuracy`` and
#: ``wall_s``.
Trainer = Callable[[ArchConfig, Path], dict[str, Any]]


@dataclass(frozen=True)
class FinalResult:
    number: int
    proxy_accuracy: float
    ace_v2: float
    final_accuracy: float
    final_val_accuracy: float
    final_wall_s: float
    final_dir: str


@dataclass
class FinalizeSummary:
    results: list[FinalResult] = field(default_factory=list)
    kendall_tau: float | None = None


def select_winners(study: optuna.Study, top_k: int) -> list[FrozenTrial]:
    """The ``top_k`` best front trials (see the module docstring)."""
    candidates = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if trial.values is not None
        and len(trial.values) == 2
        and trial.user_attrs.get("status", "ok") == "ok"
        and all(math.isfinite(v) for v in trial.values)
    ]
    front: list[FrozenTrial] = []
    for trial in candidates:
        accuracy, ace = trial.values
        dominated = any(
            other.values[0] >= accuracy
            and other.values[1] <= ace
            and (other.values[0] > accuracy or other.values[1] < ace)
            for other in candidates
        )
        if not dominated:
            front.append(trial)
    front.sort(key=lambda t: (-t.values[0], t.values[1], t.number))
    winners: list[FrozenTrial] = []
    seen: set[str] = set()
    for trial in front:
        archid = str(trial.user_attrs.get("archid", trial.number))
        if archid in seen:
            continue
        seen.add(archid)
        winners.append(trial)
    return winners[:top_k]


def _real_trainer(config: Any) -> Trainer:
    def run(arch: ArchConfig, out_dir: Path) -> dict[str, Any]:
        from evaluators.training import train

        result = train(arch, config, out_dir)
        return {
            "test_accuracy": float(result.test_accuracy),
            "val_accuracy": float(result.val_accuracy),
            "wall_s": float(result.wall_s),
        }

    return run


def fake_trainer(arch: ArchConfig, out_dir: Path) -> dict[str, Any]:
    """Zero-cost stand-in of full training (tests): writes ``arch.json`` and ``metrics.json``
    with the fake evaluator's accuracy."""
    from search.objective import FakeEvaluator

    metrics = FakeEvaluator().proxy(arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "arch.json").write_text(arch.to_json())
    data = {
        "test_accuracy": metrics.test_accuracy,
        "val_accuracy": metrics.val_accuracy,
        "wall_s": 0.0,
    }
    (out_dir / "metrics.json").write_text(json.dumps(data))
    return data


def finalize(
    study: optuna.Study,
    out: Path,
    top_k: int,
    trainer: Trainer,
    *,
    on_start: Callable[[int, int, int], None] | None = None,
) -> FinalizeSummary:
    """Fully train the ``top_k`` winners with ``trainer`` into ``out/final/trial-<N>``, store the
    results and Kendall's tau in the study; ``on_start(index, count, number)`` before each."""
    from results.ranking import kendall_tau

    summary = FinalizeSummary()
    winners = select_winners(study, top_k)
    stored = {str(k): v for k, v in final_results(study).items()}
    for index, trial in enumerate(winners):
        if on_start is not None:
            on_start(index, len(winners), trial.number)
        arch = ArchConfig.from_json(trial.user_attrs["arch"])
        folder = (out / "final" / f"trial-{trial.number}").resolve()
        metrics = trainer(arch, folder)
        record = {
            "final_accuracy": float(metrics["test_accuracy"]),
            "final_val_accuracy": float(metrics["val_accuracy"]),
            "final_wall_s": float(metrics["wall_s"]),
            "final_dir": str(folder),
        }
        stored[str(trial.number)] = record
        study.set_user_attr(FINAL_RESULTS_ATTR, stored)
        summary.results.append(
            FinalResult(
                number=trial.number,
                proxy_accuracy=float(trial.values[0]),
                ace_v2=float(trial.values[1]),
                final_accuracy=record["final_accuracy"],
                final_val_accuracy=record["final_val_accuracy"],
                final_wall_s=record["final_wall_s"],
                final_dir=record["final_dir"],
            )
        )
        logger.info("trial %d: final accuracy %.4f", trial.number, record["final_accuracy"])
    if summary.results:
        tau = kendall_tau(
            [r.proxy_accuracy for r in summary.results],
            [r.final_accuracy for r in summary.results],
        )
        summary.kendall_tau = tau if math.isfinite(tau) else None
        study.set_user_attr(KENDALL_TAU_ATTR, summary.kendall_tau)
    return summary
