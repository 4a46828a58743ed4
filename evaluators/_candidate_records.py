"""The typed values of a candidate's evaluation (re-exported by :mod:`evaluators.candidate`):
what an evaluator is built from (:class:`EvaluatorSetup`), what its steps return, and how a
candidate ended (:class:`Evaluation`, with a :class:`RungResult` per rung of successive
halving)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import Field

from pikenas.evaluators.cost import CostTable
from pikenas.evaluators.training.config import TrainConfig
from pikenas.space._strict import StrictModel
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import EvaluationError

__all__ = [
    "CostSummary",
    "DatasetSpec",
    "Decision",
    "Evaluation",
    "EvaluationStatus",
    "EvaluatorSetup",
    "FinalMetrics",
    "ProxyMetrics",
    "RungBudget",
    "RungDecision",
    "RungResult",
]

#: how a candidate ended: trained (``ok``), values reused (``duplicate``), not trained because
#: over ``max_ace`` (``over_budget``), stopped at a rung (``stopped``), ``failed``.
EvaluationStatus = Literal["ok", "duplicate", "over_budget", "stopped", "failed"]
RungDecision = Literal["promoted", "stopped", "top"]


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


class RungResult(StrictModel):
    """The proxy result of one trial at one rung of successive halving (``epochs`` of the
    top rung's training schedule) and what was decided there."""

    epochs: int = Field(ge=1, description="epochs trained when this rung was measured")
    val_accuracy: float = Field(description="validation top-1 at this rung, in [0, 1]")
    val_loss: float = Field(description="validation loss at this rung")
    val_images: int | None = Field(None, description="validation images it was measured on")
    cpu_s: float = Field(0.0, ge=0, description="CPU seconds of this rung's training")
    decision: RungDecision | None = Field(
        None,
        description="promoted (trains on), stopped (ends here), top (the last rung: COMPLETE); "
        "None until decided",
    )
    rank: int | None = Field(None, description="its place (0 = best) among `of` at this rung")
    of: int | None = Field(None, description="architectures that had reached this rung")


@dataclass(frozen=True)
class Decision:
    """What happens at a rung: ``promote`` (train on) or stop with ``reason``; ``rank`` (0 =
    best) among ``of`` architectures at the rung (None for "does not learn")."""

    promote: bool
    reason: str | None = None
    rank: int | None = None
    of: int | None = None

    def applied_to(self, result: RungResult) -> RungResult:
        """``result`` with this decision recorded."""
        decision = "promoted" if self.promote else "stopped"
        return result.model_copy(update={"decision": decision, "rank": self.rank, "of": self.of})


@dataclass(frozen=True)
class Evaluation:
    """What became of one candidate: ``status`` (``None`` while it is only costed: what a
    :data:`Claim` sees), the fitted ``arch`` and its ``cost`` once counted, the top-fidelity
    ``proxy`` metrics of a trained one, its ``rungs`` (successive halving), ``values``
    ``(accuracy in [0, 1], ACE v2)`` of an ``ok`` or ``duplicate`` one, ``reason`` of an
    ``over_budget``, ``stopped`` or ``failed`` one, and ``duplicate_of``: the trial number whose
    values (or rung results) it took."""

    status: EvaluationStatus | None = None
    arch: ArchConfig | None = None
    cost: CostSummary | None = None
    proxy: ProxyMetrics | None = None
    rungs: tuple[RungResult, ...] = ()
    values: tuple[float, float] | None = None
    reason: str | None = None
    duplicate_of: int | None = None

    @property
    def ace_v2(self) -> float:
        """ACE v2 of the costed architecture; an uncosted one raises (never scored as free)."""
        if self.cost is None:
            raise EvaluationError("the candidate has no ACE v2 yet: cost it before deciding it")
        return float(self.cost.ace_v2)

    def ended(
        self, status: EvaluationStatus, reason: str | None = None, **changes: object
    ) -> Evaluation:
        """This evaluation ended with ``status`` (and ``reason``)."""
        return replace(self, status=status, reason=reason, **changes)  # type: ignore[arg-type]


class DatasetSpec(StrictModel):
    """A data set: its name (``evaluators.data.datasets.DATASETS``) and folder when it needs
    one (cifar10, cifar100, imagefolder)."""

    name: str = "digits"
    data_dir: str | None = None


@dataclass(frozen=True)
class EvaluatorSetup:
    """The typed parts an evaluator is built from: the ``dataset``, the ``cost_table`` that
    scores ACE v2, the ``proxy`` budget (its ``epochs`` are the top rung) and the ``full``
    budget (both naming ``dataset``, with the worker's torch threads), the successive-halving
    ``rungs`` (epochs, strictly increasing, the last equal to ``proxy.epochs``; empty: one fixed
    budget) and ``searched_resolution``: the data set is resized to each candidate's input."""

    dataset: DatasetSpec
    cost_table: CostTable
    proxy: TrainConfig
    full: TrainConfig
    rungs: tuple[int, ...] = ()
    searched_resolution: bool = False

    def __post_init__(self) -> None:
        for kind, budget in (("proxy", self.proxy), ("full", self.full)):
            if (budget.dataset, budget.data_dir) != (self.dataset.name, self.dataset.data_dir):
                raise ValueError(
                    f"the {kind} budget trains on another data set than {self.dataset}"
                )
        if self.rungs and self.rungs[-1] != self.proxy.epochs:
            raise ValueError(f"top rung {self.rungs[-1]} is not proxy.epochs {self.proxy.epochs}")

    @property
    def top(self) -> int:
        """Epochs of the top fidelity (the proxy budget)."""
        return self.proxy.epochs
