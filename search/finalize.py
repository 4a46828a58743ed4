"""After the search: full training of the Pareto winners and the proxy-vs-final rank correlation.

Winners: the really trained trials (``status`` ``ok``) on the accuracy / ACE v2 front, one per
archid (:func:`results.pareto.best_per_archid`), best proxy accuracy first (ties: lower ACE v2,
lower number); the first K are trained by the evaluator's ``full`` step into
``OUT/final/trial-<N>`` (checkpointed: rerunning resumes an unfinished folder and reuses a
finished one). Optuna does not let a finished trial change, so the results go to the study's
:class:`~results.record.StudyRecord` (``final_results``, and ``kendall_tau`` between proxy and
final accuracy of the winners, ``None`` when undefined).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd

from pikenas.evaluators.candidate import CandidateEvaluator
from pikenas.results.pareto import best_per_archid, pareto_front
from pikenas.results.ranking import kendall_tau
from pikenas.results.record import FinalResult, StudyRecord, TrialRecord, update_study_record
from pikenas.results.storage import storage_folder
from pikenas.results.trials import trials_frame
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import RunDirError

__all__ = ["Winner", "FinalizeSummary", "select_winners", "finalize"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Winner:
    """One fully trained winner: its trial number, proxy values and full-training result."""

    number: int
    proxy_accuracy: float
    ace_v2: float
    result: FinalResult


@dataclass
class FinalizeSummary:
    winners: list[Winner] = field(default_factory=list)
    kendall_tau: float | None = None


def select_winners(study: optuna.Study, top_k: int) -> pd.DataFrame:
    """The rows (of :func:`results.trials.trials_frame`) of the ``top_k`` best front trials."""
    frame = trials_frame(study)
    trained = frame[(frame["state"] == "COMPLETE") & (frame["status"] == "ok")]
    front = best_per_archid(pareto_front(trained))
    ranked = front.sort_values(["accuracy", "ace_v2", "number"], ascending=[False, True, True])
    return ranked.head(top_k)


def finalize(
    study: optuna.Study,
    out: Path,
    top_k: int,
    evaluator: CandidateEvaluator,
    *,
    on_start: Callable[[int, int, int], None] | None = None,
) -> FinalizeSummary:
    """Fully train the ``top_k`` winners into ``out/final/trial-<N>`` and store the results and
    Kendall's tau in the study; ``on_start(index, count, number)`` before each."""
    summary = FinalizeSummary()
    winners = select_winners(study, top_k)
    trials = study.get_trials(deepcopy=False)  # trial numbers are positions
    stored = dict(StudyRecord.of(study).final_results)
    for index, row in enumerate(winners.itertuples(index=False)):
        number = int(row.number)
        if on_start is not None:
            on_start(index, len(winners), number)
        folder = (out / "final" / f"trial-{number}").resolve()
        run_folder = storage_folder(study._storage)
        record = TrialRecord.of(trials[number])
        if record.arch is None:
            raise RunDirError(f"trial {number} is on the front but has no architecture recorded")
        arch = ArchConfig.from_json(record.arch)
        metrics = evaluator.full(arch, folder)
        stored[number] = FinalResult(
            final_accuracy=metrics.test_accuracy,
            final_val_accuracy=metrics.val_accuracy,
            final_wall_s=metrics.wall_s,
            final_dir=str(
                folder.relative_to(run_folder)
                if run_folder is not None and folder.is_relative_to(run_folder)
                else folder
            ),
        )
        update_study_record(study, final_results=stored)
        summary.winners.append(Winner(number, row.accuracy, row.ace_v2, stored[number]))
        logger.info("trial %d: final accuracy %.4f", number, metrics.test_accuracy)
    if summary.winners:
        tau = kendall_tau(
            [winner.proxy_accuracy for winner in summary.winners],
            [winner.result.final_accuracy for winner in summary.winners],
        )
        summary.kendall_tau = tau if math.isfinite(tau) else None
        update_study_record(study, kendall_tau=summary.kendall_tau)
    return summary
