"""What happens to one candidate, for every backend (local processes, Ray, PostgreSQL workers).

:func:`evaluate_candidate` is the pure decision: fit the architecture to the data set, count
ACE (before any training), reject it when it is over ``max_ace`` (PRUNED, with the reason),
reuse the values of an already COMPLETE trial with the same archid (COMPLETE, ``duplicate_of``),
else proxy-train it (COMPLETE). Any exception of the candidate (a data misfit, an
:class:`EvaluationError` such as a non-finite loss, an out-of-memory error) becomes a FAIL
outcome with its reason: a candidate never stops the search.

:func:`run_trial` applies it to an Optuna trial: decode the genome, write the trial user
attributes of docs/study_contract.md and tell the study. Values are ``[accuracy, ace_v2]``
(directions ``maximize, minimize``).

Evaluators (``EVALUATORS[name](config, threads, option)``): ``proxy`` (the real one:
``evaluators.ace.count_ace`` and ``evaluators.training.evaluate``) and ``fake`` (a zero-cost,
deterministic stand-in for tests and overhead benchmarks; ``fake:0.2`` sleeps 0.2 s a trial).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from space.arch import ArchConfig, PikeBlockSpec
from space.errors import EvaluationError, UnknownNameError
from space.registry import Registry

if TYPE_CHECKING:
    import optuna

    from search.config import SearchConfig
    from space.searchspace import SearchSpace

__all__ = [
    "DIRECTIONS",
    "CostSummary",
    "ProxyMetrics",
    "Outcome",
    "CandidateEvaluator",
    "ProxyEvaluator",
    "FakeEvaluator",
    "EVALUATORS",
    "make_evaluator",
    "evaluate_candidate",
    "find_duplicate",
    "run_trial",
    "set_trial_user_attrs",
    "optuna_distributions",
]

logger = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")
_REASON_CHARS = 500


@dataclass(frozen=True)
class CostSummary:
    """ACE of one architecture (bit-ops of one batch-1 forward pass), MACs, parameters."""

    ace_v1: float
    ace_v2: float
    macs: int
    params: int
    elementwise_share: float


@dataclass(frozen=True)
class ProxyMetrics:
    """Proxy training result: top-1 accuracies in [0, 1], loss, wall time (s), images / s."""

    val_accuracy: float
    test_accuracy: float
    val_loss: float
    wall_s: float
    images_per_s: float


@dataclass
class Outcome:
    """How a trial ends: ``state`` (COMPLETE / PRUNED / FAIL), ``values`` ``(accuracy,
    ace_v2)`` for COMPLETE, and the user attributes to store (docs/study_contract.md names)."""

    state: Literal["COMPLETE", "PRUNED", "FAIL"]
    values: tuple[float, float] | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)


class CandidateEvaluator(Protocol):
    """The three steps a candidate goes through; cheap ones first."""

    def fit(self, arch: ArchConfig) -> ArchConfig:
        """The architecture with the data set's input geometry and classes."""
        ...

    def cost(self, arch: ArchConfig) -> CostSummary: ...

    def proxy(self, arch: ArchConfig) -> ProxyMetrics: ...


# ---- evaluators ----------------------------------------------------------------------------
class ProxyEvaluator:
    """The real evaluator: ``count_ace`` with the default cost table, and the config's proxy
    budget through ``evaluators.training.evaluate`` with ``threads`` torch threads."""

    def __init__(self, config: SearchConfig, threads: int = 1) -> None:
        self.config = config
        self.threads = threads
        self._splits: Any = None
        self._budget: Any = None

    def fit(self, arch: ArchConfig) -> ArchConfig:
        from evaluators.datasets import fit_arch_to_dataset, load_dataset

        if self._splits is None:
            dataset = self.config.dataset
            self._splits = load_dataset(dataset.name, data_dir=dataset.data_dir)
        return fit_arch_to_dataset(arch, self._splits)

    def cost(self, arch: ArchConfig) -> CostSummary:
        from evaluators.ace import count_ace

        report = count_ace(arch)
        return CostSummary(
            ace_v1=report.ace_v1,
            ace_v2=report.ace_v2,
            macs=report.macs,
            params=report.params,
            elementwise_share=report.elementwise_share,
        )

    def proxy(self, arch: ArchConfig) -> ProxyMetrics:
        from evaluators.training import evaluate

        if self._budget is None:
            self._budget = self.config.train_config("proxy", threads=self.threads)
        result = evaluate(arch, self._budget)
        return ProxyMetrics(
            val_accuracy=float(result.val_accuracy),
            test_accuracy=float(result.test_accuracy),
            val_loss=float(result.val_loss),
            wall_s=float(result.wall_s),
            images_per_s=float(result.images_per_s),
        )


class FakeEvaluator:
    """Zero-cost deterministic stand-in: ACE from the bits and channels, accuracy rising with
    the bits (so the front trades them off), ``delay_s`` of sleep per proxy evaluation.

    ``fail_when(arch)`` True makes :meth:`proxy` raise :class:`EvaluationError` (tests).
    """

    def __init__(
        self,
        delay_s: float = 0.0,
        fail_when: Callable[[ArchConfig], bool] | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.fail_when = fail_when
        self.proxy_calls = 0

    def fit(self, arch: ArchConfig) -> ArchConfig:
        return arch

    def cost(self, arch: ArchConfig) -> CostSummary:
        mac_cost = 0
        elementwise = 0
        for block in arch.blocks:
            if isinstance(block, PikeBlockSpec):
                bits = block.activation_bits
                mac_cost += block.out_channels * (
                    block.depthwise.weight_bits * bits * block.kernel_size**2
                    + block.pointwise.weight_bits * bits * 16
                )
                elementwise += block.out_channels * (32 if block.norm == "batchnorm" else 8)
        total = float(mac_cost + elementwise)
        return CostSummary(
            ace_v1=float(mac_cost),
            ace_v2=total,
            macs=mac_cost,
            params=mac_cost // 4,
            elementwise_share=elementwise / total if total else 0.0,
        )

    def proxy(self, arch: ArchConfig) -> ProxyMetrics:
        self.proxy_calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_when is not None and self.fail_when(arch):
            raise EvaluationError("fake evaluator: this candidate fails on purpose")
        score = 0.0
        count = 0
        for block in arch.blocks:
            if isinstance(block, PikeBlockSpec):
                low = min(block.depthwise.weight_bits, block.pointwise.weight_bits)
                score += math.log2(1 + min(low, block.activation_bits))
                count += 1
        accuracy = round(score / (count * math.log2(9)) if count else 0.0, 6)
        return ProxyMetrics(
            val_accuracy=min(1.0, accuracy),
            test_accuracy=min(1.0, accuracy),
            val_loss=1.0 - min(1.0, accuracy),
            wall_s=self.delay_s,
            images_per_s=0.0,
        )


EvaluatorFactory = Callable[["SearchConfig", int, str], CandidateEvaluator]
EVALUATORS: Registry[EvaluatorFactory] = Registry("evaluator")
EVALUATORS.add("proxy", lambda config, threads, option: ProxyEvaluator(config, threads))
EVALUATORS.add("fake", lambda config, threads, option: FakeEvaluator(delay_s=float(option or 0.0)))


def make_evaluator(spec: str, config: SearchConfig, threads: int = 1) -> CandidateEvaluator:
    """``spec`` is ``NAME`` or ``NAME:OPTION`` (``proxy``, ``fake``, ``fake:0.2``)."""
    name, _, option = spec.partition(":")
    factory = EVALUATORS.get(name)
    try:
        return factory(config, threads, option)
    except ValueError:
        raise UnknownNameError(f"bad evaluator option in {spec!r}; use e.g. 'fake:0.2'") from None


# ---- the decision ----------------------------------------------------------------------------
DuplicateLookup = Callable[[str], "tuple[int, list[float]] | None"]


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:_REASON_CHARS]


def evaluate_candidate(
    arch: ArchConfig,
    evaluator: CandidateEvaluator,
    *,
    max_ace: float | None = None,
    find_duplicate: DuplicateLookup | None = None,
    on_costed: Callable[[dict[str, Any]], None] | None = None,
) -> Outcome:
    """Decide one candidate (see the module docstring). ``find_duplicate(archid)`` returns
    ``(trial number, values)`` of a COMPLETE trial with that archid, or None. ``on_costed``
    receives the architecture and cost attributes just before proxy training starts (so a
    long-running trial already shows what it trains)."""
    attrs: dict[str, Any] = {}
    try:
        fitted = evaluator.fit(arch)
        attrs["arch"] = fitted.to_json(indent=None)
        attrs["archid"] = fitted.archid
        cost = evaluator.cost(fitted)
        attrs.update(
            ace_v1=float(cost.ace_v1),
            ace_v2=float(cost.ace_v2),
            macs=int(cost.macs),
            params=int(cost.params),
            elementwise_share=float(cost.elementwise_share),
        )
        if max_ace is not None and cost.ace_v2 > max_ace:
            attrs["status"] = "over_budget"
            attrs["reason"] = f"ACE v2 {cost.ace_v2:.6g} is over max_ace {max_ace:.6g}; not trained"
            return Outcome("PRUNED", None, attrs)
        duplicate = find_duplicate(fitted.archid) if find_duplicate is not None else None
        if duplicate is not None:
            number, values = duplicate
            attrs["status"] = "duplicate"
            attrs["duplicate_of"] = int(number)
            return Outcome("COMPLETE", (float(values[0]), float(values[1])), attrs)
        if on_costed is not None:
            on_costed(dict(attrs))
        metrics = evaluator.proxy(fitted)
        if not all(
            math.isfinite(value)
            for value in (metrics.val_accuracy, metrics.test_accuracy, metrics.val_loss)
        ):
            raise EvaluationError(
                f"non-finite proxy metrics (val_accuracy {metrics.val_accuracy}, "
                f"val_loss {metrics.val_loss})"
            )
        attrs.update(
            val_accuracy=metrics.val_accuracy,
            test_accuracy=metrics.test_accuracy,
            val_loss=metrics.val_loss,
            proxy_wall_s=metrics.wall_s,
            images_per_s=metrics.images_per_s,
            status="ok",
        )
        return Outcome("COMPLETE", (metrics.val_accuracy, float(cost.ace_v2)), attrs)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - a candidate must never stop the search
        logger.warning("candidate failed: %s", _reason(exc))
        attrs["status"] = "failed"
        attrs["reason"] = _reason(exc)
        return Outcome("FAIL", None, attrs)


# ---- Optuna glue -----------------------------------------------------------------------------
def optuna_distributions(space: SearchSpace) -> dict[str, Any]:
    """The space's genes as Optuna categorical distributions (for ``study.ask``)."""
    from optuna.distributions import CategoricalDistribution

    return {
        name: CategoricalDistribution(list(choices))
        for name, choices in space.distributions().items()
    }


def find_duplicate(study: optuna.Study, archid: str) -> tuple[int, list[float]] | None:
    """``(number, values)`` of the first COMPLETE, really evaluated trial with ``archid``."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if attrs.get("archid") == archid and attrs.get("status") == "ok" and trial.values:
            return trial.number, list(trial.values)
    return None


def set_trial_user_attrs(
    storage: optuna.storages.BaseStorage, trial_id: int, attrs: dict[str, Any]
) -> None:
    """Set several trial user attributes (a :class:`search._journal.BufferedJournalStorage`
    writes them in one append)."""
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


def run_trial(
    study: optuna.Study,
    trial: optuna.trial.Trial,
    space: SearchSpace,
    evaluator: CandidateEvaluator,
    *,
    max_ace: float | None = None,
) -> Outcome:
    """Decode ``trial``'s genome, decide it, store its user attributes and tell the study.

    When another worker has meanwhile failed the trial (it took it for dead), the outcome is
    dropped with a warning and returned as FAIL.
    """
    from optuna.exceptions import UpdateFinishedTrialError

    storage = study._storage
    trial_id = trial._trial_id
    early: dict[str, Any] = {}

    def store_early(attrs: dict[str, Any]) -> None:
        early.update(attrs)
        set_trial_user_attrs(storage, trial_id, attrs)

    try:
        try:
            arch = space.suggest(trial)
        except (KeyboardInterrupt, SystemExit):
            raise
        except UpdateFinishedTrialError:
            raise
        except BaseException as exc:  # noqa: BLE001 - e.g. an enqueued genome from another space
            outcome = Outcome("FAIL", None, {"status": "failed", "reason": _reason(exc)})
        else:
            outcome = evaluate_candidate(
                arch,
                evaluator,
                max_ace=max_ace,
                find_duplicate=lambda archid: find_duplicate(study, archid),
                on_costed=store_early,
            )
        late = {k: v for k, v in outcome.user_attrs.items() if early.get(k, _MISSING) != v}
        set_trial_user_attrs(storage, trial_id, late)
        if _tell(study, trial, outcome):
            return outcome
    except UpdateFinishedTrialError:
        pass
    logger.warning(
        "trial %d was finished by another worker meanwhile; its result is dropped", trial.number
    )
    return Outcome("FAIL", None, {"status": "failed", "reason": "finished elsewhere"})


_MISSING = object()


def _tell(study: optuna.Study, trial: optuna.trial.Trial, outcome: Outcome) -> bool:
    """Tell the outcome; False when the trial had already been finished elsewhere."""
    from optuna.trial import TrialState

    state = TrialState[outcome.state]
    values = list(outcome.values) if outcome.values is not None else None
    frozen = study.tell(trial, values, state=state, skip_if_finished=True)
    return frozen.state == state and (values is None or frozen.values == values)
