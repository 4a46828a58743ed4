"""What happens to one candidate, whatever process runs it: the evaluator and the decision.

:func:`evaluate_candidate` is the pure decision: fit the architecture to the data set, count
ACE (before any training), reject it when it is over ``max_ace`` (``over_budget``, with the
reason, before any training), reuse the values of an already trained architecture with the same
archid (``duplicate``), else proxy-train it (``ok``). With successive halving (``rungs``,
:class:`Rungs`) it is trained rung by rung, each rung decided by the caller: stopped at a rung
it ends ``stopped``, its rung results in the :class:`Evaluation` (:func:`run_rungs`). Any
exception of the candidate (a data misfit, an :class:`EvaluationError` such as a non-finite
loss, an out-of-memory error) becomes a ``failed`` evaluation with its reason: a candidate never
stops the search.

An evaluator has four steps, cheap ones first (:class:`CandidateEvaluator`); the real one is
:class:`ProxyEvaluator`, built from typed parts (:class:`EvaluatorSetup`: the data set, the
cost table, the proxy and full :class:`~evaluators.training.TrainConfig` and the rungs). The
search maps an :class:`Evaluation` to its trial record in one place (``search.trial``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pikenas.evaluators._candidate_records import (
    CostSummary,
    DatasetSpec,
    Decision,
    Evaluation,
    EvaluationStatus,
    EvaluatorSetup,
    FinalMetrics,
    ProxyMetrics,
    RungBudget,
    RungDecision,
    RungResult,
)
from pikenas.evaluators.training.config import TrainConfig
from pikenas.space._text import redact
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import EvaluationError, RunDirError

if TYPE_CHECKING:
    from pikenas.evaluators.data.datasets import DatasetSplits

__all__ = [
    "CandidateEvaluator",
    "Claim",
    "CostSummary",
    "DatasetSpec",
    "Decision",
    "Evaluation",
    "EvaluationStatus",
    "EvaluatorFactory",
    "EvaluatorSetup",
    "FinalMetrics",
    "ProxyEvaluator",
    "ProxyMetrics",
    "RungBudget",
    "RungDecision",
    "RungResult",
    "Rungs",
    "evaluate_candidate",
    "failure_reason",
    "run_rungs",
]

logger = logging.getLogger(__name__)

_REASON_CHARS = 500


class CandidateEvaluator(Protocol):
    """The steps a candidate goes through; cheap ones first."""

    def fit(self, arch: ArchConfig) -> ArchConfig:
        """The architecture with the data set's input geometry and classes."""
        ...

    def cost(self, arch: ArchConfig) -> CostSummary: ...

    def proxy(self, arch: ArchConfig, rung: RungBudget | None = None) -> ProxyMetrics:
        """The proxy budget (``rung``: up to that rung, resumable)."""
        ...

    def full(self, arch: ArchConfig, out_dir: Path) -> FinalMetrics:
        """Full training of a winner into ``out_dir`` (resumable)."""
        ...


#: builds an evaluator from its typed parts (``--evaluator MODULE:CALLABLE`` names one).
EvaluatorFactory = Callable[[EvaluatorSetup], CandidateEvaluator]


class ProxyEvaluator:
    """The real evaluator: ``count_ace`` with the setup's cost table, its proxy and full budgets
    through ``evaluators.training``. When the space searches the input resolution, the data set
    is resized to each candidate's. A rung checkpoint that cannot be read (truncated, garbage, a
    link or another network's) is discarded with a warning and that rung trained from scratch:
    it is the search's own cache, and a corrupt one must not fail its architecture for good."""

    def __init__(self, setup: EvaluatorSetup) -> None:
        self.setup = setup
        self._val_images: int | None = None

    def _splits(self, resolution: int | None = None) -> DatasetSplits:
        from pikenas.evaluators.data.datasets import load_dataset

        dataset = self.setup.dataset  # load_dataset caches each size
        return load_dataset(dataset.name, data_dir=dataset.data_dir, resolution=resolution)

    def fit(self, arch: ArchConfig) -> ArchConfig:
        from pikenas.evaluators.data.datasets import fit_arch_to_dataset

        splits = self._splits()
        self._val_images = len(splits.val)
        if self.setup.searched_resolution:
            splits = self._splits(arch.resolution)
        return fit_arch_to_dataset(arch, splits)

    def _budget(self, budget: TrainConfig, arch: ArchConfig) -> TrainConfig:
        if self.setup.searched_resolution:
            return budget.replace(resolution=arch.resolution)
        return budget

    def cost(self, arch: ArchConfig) -> CostSummary:
        from pikenas.evaluators.cost import count_ace

        report = count_ace(arch, cost_table=self.setup.cost_table)
        return CostSummary(
            ace_v1=report.ace_v1,
            ace_v2=report.ace_v2,
            macs=report.macs,
            params=report.params,
            elementwise_share=report.elementwise_share,
        )

    def proxy(self, arch: ArchConfig, rung: RungBudget | None = None) -> ProxyMetrics:
        from pikenas.evaluators.training.loop import evaluate

        until = rung.epochs if rung is not None else None
        checkpoint = rung.checkpoint if rung is not None else None
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
        budget = self._budget(self.setup.proxy, arch)
        try:
            result = evaluate(arch, budget, until_epoch=until, checkpoint=checkpoint)
        except RunDirError as exc:
            # load_checkpoint names the file it cannot read; any other RunDirError is not ours
            if checkpoint is None or str(checkpoint) not in str(exc):
                raise
            try:
                checkpoint.unlink()
            except OSError:
                raise exc from None  # cannot discard it (a folder, read-only): say why it failed
            logger.warning(
                "discarded an unreadable rung checkpoint, training from scratch: %s", exc
            )
            result = evaluate(arch, budget, until_epoch=until, checkpoint=checkpoint)
        return ProxyMetrics(
            val_accuracy=float(result.val_accuracy),
            test_accuracy=float(result.test_accuracy),
            val_loss=float(result.val_loss),
            wall_s=float(result.wall_s),
            images_per_s=float(result.images_per_s),
            val_images=self._val_images,
        )

    def full(self, arch: ArchConfig, out_dir: Path) -> FinalMetrics:
        from pikenas.evaluators.training.loop import train

        result = train(arch, self._budget(self.setup.full, arch), out_dir)
        return FinalMetrics(
            test_accuracy=float(result.test_accuracy),
            val_accuracy=float(result.val_accuracy),
            wall_s=float(result.wall_s),
        )


def failure_reason(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 500 characters): a failed trial's reason."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {text}")[:_REASON_CHARS]


#: ``claim(costed evaluation)`` -> ``(number, values)`` of an already trained trial with the
#: same archid to reuse, or ``None`` once this candidate may train it (see ``search.loop``);
#: ``(number, None)``: a duplicate the study no longer needs (it has its N trials).
Claim = Callable[[Evaluation], "tuple[int, list[float] | None] | None"]


class Rungs(Protocol):
    """What successive halving needs from the caller for one candidate."""

    @property
    def epochs(self) -> tuple[int, ...]:
        """The rungs (epochs, strictly increasing; the last is the proxy budget)."""
        ...

    def known(self, archid: str) -> tuple[int | None, dict[int, RungResult]]:
        """Rung results of ``archid`` held already (from a stopped or failed trial) by epochs,
        and the number of the trial that has them."""
        ...

    def checkpoint(self, archid: str) -> Path | None:
        """The checkpoint file of ``archid``'s proxy training (None: none kept)."""
        ...

    def decide(self, evaluation: Evaluation, result: RungResult) -> Decision:
        """Decide ``result`` (not the top rung) of the costed ``evaluation`` (whose ``rungs``
        are those before it); store it, decided."""
        ...


def evaluate_candidate(
    arch: ArchConfig,
    evaluator: CandidateEvaluator,
    *,
    max_ace: float | None = None,
    claim: Claim | None = None,
    rungs: Rungs | None = None,
) -> Evaluation:
    """Decide one candidate (see the module docstring)."""
    evaluation = Evaluation()
    try:
        fitted = evaluator.fit(arch)
        cost = evaluator.cost(fitted)
        evaluation = Evaluation(arch=fitted, cost=cost)
        if max_ace is not None and cost.ace_v2 > max_ace:
            reason = f"ACE v2 {cost.ace_v2:.6g} is over max_ace {max_ace:.6g}; not trained"
            return evaluation.ended("over_budget", reason)
        duplicate = claim(evaluation) if claim is not None else None
        if duplicate is not None:
            number, values = duplicate
            if values is None:
                full = "the study has its N trials at the top rung (or training to it)"
                return evaluation.ended("stopped", full, duplicate_of=number)
            reused = (float(values[0]), float(values[1]))
            return evaluation.ended("duplicate", values=reused, duplicate_of=number)
        if rungs is not None:
            return run_rungs(evaluation, evaluator, rungs)
        metrics = _checked(evaluator.proxy(fitted))
        return evaluation.ended(
            "ok", proxy=metrics, values=(metrics.val_accuracy, evaluation.ace_v2)
        )
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a candidate must never stop the search
        logger.warning("candidate failed: %s", failure_reason(exc))
        return evaluation.ended("failed", failure_reason(exc))


def _checked(metrics: ProxyMetrics, top: bool = True) -> ProxyMetrics:
    values = [metrics.val_accuracy, metrics.val_loss] + ([metrics.test_accuracy] if top else [])
    if not all(math.isfinite(value) for value in values):
        raise EvaluationError(
            f"non-finite proxy metrics (val_accuracy {metrics.val_accuracy}, "
            f"val_loss {metrics.val_loss})"
        )
    return metrics


def run_rungs(costed: Evaluation, evaluator: CandidateEvaluator, rungs: Rungs) -> Evaluation:
    """Train the ``costed`` candidate rung by rung; rung results already held for its archid
    are taken, not trained again (a retry after a crash, or a stopped architecture proposed
    again, which is decided afresh). ``ok`` after the top rung, ``stopped`` where a rung stops
    it."""
    fitted = costed.arch
    if fitted is None:
        raise EvaluationError("run_rungs needs a fitted, costed candidate")
    archid = fitted.archid
    source, known = rungs.known(archid)
    checkpoint = rungs.checkpoint(archid)
    trained = False
    evaluation = costed
    for epochs in rungs.epochs:
        top = epochs == rungs.epochs[-1]
        reused = known.get(epochs)
        if reused is not None and not top:
            result = reused.model_copy(update={"cpu_s": 0.0, "decision": None})
        else:
            start = time.process_time()
            metrics = _checked(evaluator.proxy(fitted, RungBudget(epochs, checkpoint)), top)
            trained = True
            result = RungResult(
                epochs=epochs,
                val_accuracy=metrics.val_accuracy,
                val_loss=metrics.val_loss,
                val_images=metrics.val_images,
                cpu_s=time.process_time() - start,
            )
        if top:
            if checkpoint is not None:
                with contextlib.suppress(OSError):
                    checkpoint.unlink()  # its values are final; duplicates reuse them
            done = (*evaluation.rungs, result.model_copy(update={"decision": "top"}))
            values = (metrics.val_accuracy, evaluation.ace_v2)
            return evaluation.ended("ok", rungs=done, proxy=metrics, values=values)
        decision = rungs.decide(evaluation, result)
        evaluation = replace(evaluation, rungs=(*evaluation.rungs, decision.applied_to(result)))
        if not decision.promote:
            source_of = source if not trained and source is not None else None
            return evaluation.ended("stopped", decision.reason, duplicate_of=source_of)
    raise AssertionError("the top rung always returns")
