"""What happens to one candidate, whatever process runs it: the evaluator and the decision.

:func:`evaluate_candidate` is the pure decision: fit the architecture to the data set, count
ACE (before any training), reject it when it is over ``max_ace`` (PRUNED, with the reason),
reuse the values of an already trained trial with the same archid (COMPLETE, ``duplicate_of``),
else proxy-train it (COMPLETE). With successive halving (``rungs``, :class:`Rungs`) it is
trained rung by rung, each rung decided by the loop: stopped at a rung it is PRUNED with status
``stopped``, its rung results in its record (:func:`run_rungs`). Any exception of the candidate
(a data misfit, an :class:`EvaluationError` such as a non-finite loss, an out-of-memory
error) becomes a FAIL outcome with its reason: a candidate never stops the search.

An evaluator has four steps, cheap ones first (:class:`CandidateEvaluator`); the real one is
:class:`ProxyEvaluator` (``evaluators.ace.count_ace`` with the search's cost table,
``evaluators.training.evaluate`` / ``train``). Another one is plugged in as an importable
factory ``module:callable`` taking ``(config, threads)`` (:func:`make_evaluator`): tests use
that for their zero-cost evaluators.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from optuna.trial import TrialState

from pikenas.results.record import RungResult, TrialRecord
from pikenas.search.fidelity import Decision, FidelityConfig
from pikenas.space._text import redact
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import EvaluationError, SearchConfigError

if TYPE_CHECKING:
    from pikenas.search.config import SearchConfig

__all__ = [
    "CostSummary",
    "ProxyMetrics",
    "RungBudget",
    "Rungs",
    "FinalMetrics",
    "Outcome",
    "CandidateEvaluator",
    "ProxyEvaluator",
    "Claim",
    "make_evaluator",
    "evaluate_candidate",
    "failure_reason",
    "run_rungs",
]

logger = logging.getLogger(__name__)

_REASON_CHARS = 500


@dataclass(frozen=True)
class CostSummary:
    """ACE of one architecture (one batch-1 forward pass, in the cost table's unit), MACs,
    parameters, the elementwise share of ACE v2 in [0, 1]."""

    ace_v1: float
    ace_v2: float
    macs: int
    params: int
    elementwise_share: float


@dataclass(frozen=True)
class ProxyMetrics:
    """Proxy training result: top-1 accuracies in [0, 1] (test NaN below the top rung), loss,
    wall time (s), images / s, and the validation images counted (``None``: unknown; then no
    "does not learn" test)."""

    val_accuracy: float
    test_accuracy: float
    val_loss: float
    wall_s: float
    images_per_s: float
    val_images: int | None = None


@dataclass(frozen=True)
class RungBudget:
    """One rung of successive halving: train until ``epochs`` of the top rung's schedule,
    continuing from ``checkpoint`` (a file; ``None``: from scratch, nothing kept)."""

    epochs: int
    checkpoint: Path | None = None


@dataclass(frozen=True)
class FinalMetrics:
    """Full training result: test and validation top-1 in [0, 1], wall time (s)."""

    test_accuracy: float
    val_accuracy: float
    wall_s: float


@dataclass(frozen=True)
class Outcome:
    """How a trial ends: ``state`` (COMPLETE / PRUNED / FAIL), ``values`` ``(accuracy, ace_v2)``
    for COMPLETE, and the trial's :class:`TrialRecord`."""

    state: TrialState
    values: tuple[float, float] | None = None
    record: TrialRecord = field(default_factory=TrialRecord)


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


class ProxyEvaluator:
    """The real evaluator: ``count_ace`` with the config's cost table, the config's proxy and
    full budgets through ``evaluators.training`` with ``threads`` torch threads. When the space
    searches the input resolution, the data set is resized to each candidate's."""

    def __init__(self, config: SearchConfig, threads: int = 1) -> None:
        self.config = config
        self.threads = threads
        self.cost_table = config.cost_table_object()
        self._splits: Any = None
        self._budget: Any = None

    def fit(self, arch: ArchConfig) -> ArchConfig:
        from pikenas.evaluators.data.datasets import fit_arch_to_dataset, load_dataset

        if self._splits is None:
            dataset = self.config.dataset
            self._splits = load_dataset(dataset.name, data_dir=dataset.data_dir)
        if self.config.space.searched_resolution:  # load_dataset caches each size
            dataset = self.config.dataset
            resized = load_dataset(
                dataset.name, data_dir=dataset.data_dir, resolution=arch.resolution
            )
            return fit_arch_to_dataset(arch, resized)
        return fit_arch_to_dataset(arch, self._splits)

    def _at_resolution(self, budget: Any, arch: ArchConfig) -> Any:
        if self.config.space.searched_resolution:
            return budget.replace(resolution=arch.resolution)
        return budget

    def cost(self, arch: ArchConfig) -> CostSummary:
        from pikenas.evaluators.cost import count_ace

        report = count_ace(arch, cost_table=self.cost_table)
        return CostSummary(
            ace_v1=report.ace_v1,
            ace_v2=report.ace_v2,
            macs=report.macs,
            params=report.params,
            elementwise_share=report.elementwise_share,
        )

    def proxy(self, arch: ArchConfig, rung: RungBudget | None = None) -> ProxyMetrics:
        from pikenas.evaluators.training.loop import evaluate

        if self._budget is None:
            self._budget = self.config.train_config("proxy", threads=self.threads)
        until = rung.epochs if rung is not None else None
        checkpoint = rung.checkpoint if rung is not None else None
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
        budget = self._at_resolution(self._budget, arch)
        result = evaluate(arch, budget, until_epoch=until, checkpoint=checkpoint)
        return ProxyMetrics(
            val_accuracy=float(result.val_accuracy),
            test_accuracy=float(result.test_accuracy),
            val_loss=float(result.val_loss),
            wall_s=float(result.wall_s),
            images_per_s=float(result.images_per_s),
            val_images=len(self._splits.val) if self._splits is not None else None,
        )

    def full(self, arch: ArchConfig, out_dir: Path) -> FinalMetrics:
        from pikenas.evaluators.training.loop import train

        budget = self._at_resolution(self.config.train_config("full", threads=self.threads), arch)
        result = train(arch, budget, out_dir)
        return FinalMetrics(
            test_accuracy=float(result.test_accuracy),
            val_accuracy=float(result.val_accuracy),
            wall_s=float(result.wall_s),
        )


EvaluatorFactory = Callable[["SearchConfig", int], CandidateEvaluator]


def evaluator_factory(reference: str | None) -> EvaluatorFactory:
    """The factory named ``module:callable`` (``None``: :class:`ProxyEvaluator`); an unknown
    one raises :class:`SearchConfigError` with one line."""
    if reference is None:
        return ProxyEvaluator
    module_name, _, attribute = reference.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SearchConfigError(
            f"--evaluator {reference!r}: cannot import it ({exc}); give MODULE:CALLABLE of a "
            "factory (config, threads) -> evaluator"
        ) from None
    if not callable(factory):
        raise SearchConfigError(f"--evaluator {reference!r} is not callable")
    return factory


def make_evaluator(
    reference: str | None, config: SearchConfig, threads: int = 1
) -> CandidateEvaluator:
    """The evaluator of ``reference`` (see :func:`evaluator_factory`) for ``config``."""
    return evaluator_factory(reference)(config, threads)


def failure_reason(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 500 characters): a FAIL trial's reason."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {text}")[:_REASON_CHARS]


#: ``claim(costed record)`` -> ``(number, values)`` of an already trained trial with the same
#: archid to reuse, or ``None`` once this trial may train it (see :mod:`search.loop`);
#: ``(number, None)``: a duplicate the study no longer needs (it has its N trials).
Claim = Callable[[TrialRecord], "tuple[int, list[float] | None] | None"]


class Rungs(Protocol):
    """What successive halving needs from the loop (:mod:`search.loop`) for one trial."""

    fidelity: FidelityConfig

    def known(self, archid: str) -> tuple[int | None, dict[int, RungResult]]:
        """Rung results of ``archid`` the study holds already (from a stopped or failed trial)
        by epochs, and the number of the trial that has them."""
        ...

    def checkpoint(self, archid: str) -> Path | None:
        """The checkpoint file of ``archid``'s proxy training (None: none kept)."""
        ...

    def decide(self, record: TrialRecord, result: RungResult) -> Decision:
        """Decide ``result`` (not the top rung); store ``record`` with it appended, decided."""
        ...


def evaluate_candidate(
    arch: ArchConfig,
    evaluator: CandidateEvaluator,
    *,
    max_ace: float | None = None,
    claim: Claim | None = None,
    rungs: Rungs | None = None,
) -> Outcome:
    """Decide one candidate (see the module docstring)."""
    record = TrialRecord()
    try:
        fitted = evaluator.fit(arch)
        cost = evaluator.cost(fitted)
        record = TrialRecord(
            arch=fitted.to_json(indent=None),
            archid=fitted.archid,
            ace_v1=float(cost.ace_v1),
            ace_v2=float(cost.ace_v2),
            macs=int(cost.macs),
            params=int(cost.params),
            elementwise_share=float(cost.elementwise_share),
        )
        if max_ace is not None and cost.ace_v2 > max_ace:
            reason = f"ACE v2 {cost.ace_v2:.6g} is over max_ace {max_ace:.6g}; not trained"
            return Outcome(TrialState.PRUNED, None, _with(record, "over_budget", reason))
        duplicate = claim(record) if claim is not None else None
        if duplicate is not None:
            number, values = duplicate
            if values is None:
                full = "the study has its N trials at the top rung (or training to it)"
                update = {"status": "stopped", "reason": full, "duplicate_of": number}
                return Outcome(TrialState.PRUNED, None, record.model_copy(update=update))
            record = record.model_copy(update={"status": "duplicate", "duplicate_of": number})
            return Outcome(TrialState.COMPLETE, (float(values[0]), float(values[1])), record)
        if rungs is not None:
            return run_rungs(fitted, record, evaluator, rungs)
        metrics = _checked(evaluator.proxy(fitted))
        record = record.model_copy(update=_proxy_fields(metrics))
        return Outcome(TrialState.COMPLETE, (metrics.val_accuracy, float(cost.ace_v2)), record)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a candidate must never stop the search
        logger.warning("candidate failed: %s", failure_reason(exc))
        return Outcome(TrialState.FAIL, None, _with(record, "failed", failure_reason(exc)))


def _proxy_fields(metrics: Any) -> dict[str, Any]:
    """The trial record's fields of a top-fidelity proxy result (status ``ok``)."""
    return {
        "val_accuracy": metrics.val_accuracy,
        "test_accuracy": metrics.test_accuracy,
        "val_loss": metrics.val_loss,
        "proxy_wall_s": metrics.wall_s,
        "images_per_s": metrics.images_per_s,
        "status": "ok",
    }


def _checked(metrics: ProxyMetrics, top: bool = True) -> ProxyMetrics:
    values = [metrics.val_accuracy, metrics.val_loss] + ([metrics.test_accuracy] if top else [])
    if not all(math.isfinite(value) for value in values):
        raise EvaluationError(
            f"non-finite proxy metrics (val_accuracy {metrics.val_accuracy}, "
            f"val_loss {metrics.val_loss})"
        )
    return metrics


def run_rungs(
    fitted: ArchConfig, record: TrialRecord, evaluator: CandidateEvaluator, rungs: Rungs
) -> Outcome:
    """Train ``fitted`` (costed in ``record``) rung by rung; rung results the study already
    holds for its archid are taken, not trained again (a retry after a crash, or a stopped
    architecture proposed again, which is decided afresh). COMPLETE after the top rung, PRUNED
    (status ``stopped``) where a rung stops it."""
    archid = record.archid or fitted.archid
    source, known = rungs.known(archid)
    checkpoint = rungs.checkpoint(archid)
    trained = False
    for epochs in rungs.fidelity.rungs:
        top = epochs == rungs.fidelity.top
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
            done = (*(record.rungs or ()), result.model_copy(update={"decision": "top"}))
            record = record.model_copy(update={"rungs": done, **_proxy_fields(metrics)})
            values = (metrics.val_accuracy, float(record.ace_v2 or 0.0))
            return Outcome(TrialState.COMPLETE, values, record)
        decision = rungs.decide(record, result)
        record = record.model_copy(
            update={"rungs": (*(record.rungs or ()), decision.applied_to(result))}
        )
        if not decision.promote:
            update: dict[str, object] = {"status": "stopped", "reason": decision.reason}
            if not trained and source is not None:
                update["duplicate_of"] = source
            return Outcome(TrialState.PRUNED, None, record.model_copy(update=update))
    raise AssertionError("the top rung always returns")


def _with(record: TrialRecord, status: str, reason: str) -> TrialRecord:
    return record.model_copy(update={"status": status, "reason": reason})
