"""One trial of the loop: decode its genome (or take its zoo baseline), decide it with
:func:`evaluators.candidate.evaluate_candidate`, store its record and tell the study.

:func:`outcome_of` is the one place where an :class:`~evaluators.candidate.Evaluation` becomes
a trial's Optuna state, values and :class:`~results.record.TrialRecord`.

A zoo baseline (an enqueued trial whose record names ``baseline``) is evaluated as exactly its
zoo model at the space's geometry (:func:`search.config.baseline_arch`: the archid and ACE v2
of ``pikenas ace NAME`` at that geometry), inside the space or not; its genome (the nearest
one, enqueued) is still suggested, so that the sampler sees the trial's parameters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from pikenas.evaluators.candidate import (
    CandidateEvaluator,
    Claim,
    Evaluation,
    EvaluationStatus,
    Rungs,
    evaluate_candidate,
    failure_reason,
)
from pikenas.results.record import TrialRecord
from pikenas.search.config import baseline_arch

if TYPE_CHECKING:
    from pikenas.space.searchspace import SearchSpace

__all__ = ["Outcome", "outcome_of", "record_of", "run_trial", "set_attrs"]

logger = logging.getLogger(__name__)

_STATES: dict[EvaluationStatus, TrialState] = {
    "ok": TrialState.COMPLETE,
    "duplicate": TrialState.COMPLETE,
    "over_budget": TrialState.PRUNED,
    "stopped": TrialState.PRUNED,
    "failed": TrialState.FAIL,
}


@dataclass(frozen=True)
class Outcome:
    """How a trial ends: ``state`` (COMPLETE / PRUNED / FAIL), ``values`` ``(accuracy, ace_v2)``
    for COMPLETE, and the trial's :class:`TrialRecord`."""

    state: TrialState
    values: tuple[float, float] | None = None
    record: TrialRecord = field(default_factory=TrialRecord)


def record_of(evaluation: Evaluation) -> TrialRecord:
    """The trial record of ``evaluation`` (a costed one, undecided, is a claim's record)."""
    fields: dict[str, Any] = {
        "status": evaluation.status,
        "reason": evaluation.reason,
        "duplicate_of": evaluation.duplicate_of,
        "rungs": evaluation.rungs or None,
    }
    if evaluation.arch is not None:
        fields.update(arch=evaluation.arch.to_json(indent=None), archid=evaluation.arch.archid)
    cost = evaluation.cost
    if cost is not None:
        fields.update(
            ace_v1=float(cost.ace_v1),
            ace_v2=float(cost.ace_v2),
            macs=int(cost.macs),
            params=int(cost.params),
            elementwise_share=float(cost.elementwise_share),
        )
    proxy = evaluation.proxy
    if proxy is not None and evaluation.status == "ok":
        fields.update(
            val_accuracy=proxy.val_accuracy,
            test_accuracy=proxy.test_accuracy,
            val_loss=proxy.val_loss,
            proxy_wall_s=proxy.wall_s,
            images_per_s=proxy.images_per_s,
        )
    return TrialRecord(**fields)


def outcome_of(evaluation: Evaluation) -> Outcome:
    """The Optuna state, values and record of a decided ``evaluation``."""
    if evaluation.status is None:
        raise ValueError("an undecided evaluation has no trial outcome")
    state = _STATES[evaluation.status]
    values = evaluation.values if state == TrialState.COMPLETE else None
    return Outcome(state, values, record_of(evaluation))


def set_attrs(storage: optuna.storages.BaseStorage, trial_id: int, attrs: dict) -> None:
    """Several user attributes (a buffered journal writes them in one append)."""
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


def run_trial(
    study: optuna.Study,
    trial: optuna.trial.Trial,
    space: SearchSpace,
    evaluator: CandidateEvaluator,
    max_ace: float | None,
    claim: Claim | None = None,
    written: dict | None = None,
    rungs: Rungs | None = None,
    baseline: str | None = None,
) -> Outcome:
    """Decode ``trial``'s genome (``baseline``: evaluate that zoo model), decide it, store its
    record (but the attributes already ``written``) and tell the study. When another worker
    has meanwhile failed the trial (it took it for dead), the outcome is dropped with a warning
    and returned as FAIL."""
    storage = study._storage
    try:
        try:
            arch = space.suggest(trial)
            if baseline is not None:
                arch = baseline_arch(baseline, space)
        except UpdateFinishedTrialError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. an enqueued genome from another space
            outcome = outcome_of(Evaluation().ended("failed", failure_reason(exc)))
        else:
            outcome = outcome_of(
                evaluate_candidate(arch, evaluator, max_ace=max_ace, claim=claim, rungs=rungs)
            )
        written = written or {}
        late = {k: v for k, v in outcome.record.to_attrs().items() if written.get(k) != v}
        set_attrs(storage, trial._trial_id, late)
        values = list(outcome.values) if outcome.values is not None else None
        told = study.tell(trial, values, state=outcome.state, skip_if_finished=True)
        if told.state == outcome.state and (values is None or told.values == values):
            return outcome
    except UpdateFinishedTrialError:
        pass
    logger.warning(
        "trial %d was finished by another worker meanwhile; result dropped", trial.number
    )
    dropped = TrialRecord(status="failed", reason="finished elsewhere")
    return Outcome(TrialState.FAIL, None, dropped)
