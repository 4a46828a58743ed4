"""Zero-cost evaluators for search tests and overhead benchmarks, plugged in the way any custom
evaluator is: by the ``module:callable`` of a factory ``(EvaluatorSetup) -> evaluator``
(:data:`FAKE`, :data:`FAKE_TRAINING`). Subprocesses read their delay per proxy evaluation from
``PIKENAS_FAKE_DELAY_S`` (seconds, default 0).

Successive halving: below the top rung (``setup.rungs``) the fake accuracy is scaled by
``0.5 + 0.5 * epochs / top`` (the ranking of a rung is the ranking of the top), and a rung's
checkpoint is a JSON file ``{"epochs": E}``; every rung appends ``{"archid", "start", "stop"}``
(the epochs it trained) to ``ledger.jsonl`` beside the checkpoints, so that tests can check no
epoch was trained twice.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from pikenas.evaluators.candidate import (
    CostSummary,
    EvaluatorSetup,
    FinalMetrics,
    ProxyEvaluator,
    ProxyMetrics,
    RungBudget,
)
from pikenas.space.arch import ArchConfig, PikeBlockSpec
from pikenas.space.errors import EvaluationError

#: the zero-cost evaluator of :func:`fake`.
FAKE = "tests.search_tests.fakes:fake"
#: real ACE counting with the search's cost table, fake training (:func:`fake_training`).
FAKE_TRAINING = "tests.search_tests.fakes:fake_training"
DELAY_ENV = "PIKENAS_FAKE_DELAY_S"
#: validation images the fake reports (the "does not learn" test uses the count)
FAKE_VAL_IMAGES = 1000
LEDGER = "ledger.jsonl"


def fake_accuracy(arch: ArchConfig) -> float:
    """Accuracy rising with the bits (so the front trades them off), in [0, 1]."""
    score, count = 0.0, 0
    for block in arch.blocks:
        if isinstance(block, PikeBlockSpec):
            low = min(block.depthwise.weight_bits, block.pointwise.weight_bits)
            score += math.log2(1 + min(low, block.activation_bits))
            count += 1
    return min(1.0, round(score / (count * math.log2(9)) if count else 0.0, 6))


class FakeEvaluator:
    """Deterministic stand-in: ACE from the bits and channels, :func:`fake_accuracy`,
    ``delay_s`` of sleep per proxy evaluation; ``fail_when(arch)`` True makes :meth:`proxy`
    raise :class:`EvaluationError`. ``proxy_calls`` counts the trainings."""

    def __init__(
        self,
        delay_s: float = 0.0,
        fail_when: Callable[[ArchConfig], bool] | None = None,
        top: int | None = None,
        dead_when: Callable[[ArchConfig], bool] | None = None,
    ) -> None:
        self.delay_s = delay_s
        self.fail_when = fail_when
        self.top = top
        self.dead_when = dead_when
        self.proxy_calls = 0

    def fit(self, arch: ArchConfig) -> ArchConfig:
        return arch

    def cost(self, arch: ArchConfig) -> CostSummary:
        mac_cost = elementwise = 0
        for block in arch.blocks:
            if isinstance(block, PikeBlockSpec):
                bits = block.activation_bits
                mac_cost += block.out_channels * (
                    block.depthwise.weight_bits * bits * block.kernel_size**2
                    + block.pointwise.weight_bits * bits * 16
                )
                elementwise += block.out_channels * (32 if block.norm == "batchnorm" else 8)
        total = float(mac_cost + elementwise)
        share = elementwise / total if total else 0.0
        return CostSummary(float(mac_cost), total, mac_cost, mac_cost // 4, share)

    def proxy(self, arch: ArchConfig, rung: RungBudget | None = None) -> ProxyMetrics:
        self.proxy_calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_when is not None and self.fail_when(arch):
            raise EvaluationError("fake evaluator: this candidate fails on purpose")
        accuracy = fake_accuracy(arch)
        if self.dead_when is not None and self.dead_when(arch):
            accuracy = 0.1
        test = accuracy
        if rung is not None:
            top = self.top or rung.epochs
            if rung.checkpoint is not None:
                _train_checkpoint(arch, rung)
            if rung.epochs < top:
                accuracy = round(accuracy * (0.5 + 0.5 * rung.epochs / top), 6)
                test = math.nan
        return ProxyMetrics(
            accuracy, test, 1.0 - accuracy, self.delay_s, 0.0, val_images=FAKE_VAL_IMAGES
        )

    def full(self, arch: ArchConfig, out_dir: Path) -> FinalMetrics:
        """Writes ``arch.json`` and ``metrics.json`` as full training would."""
        accuracy = fake_accuracy(arch)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "arch.json").write_text(arch.to_json())
        metrics = {"test_accuracy": accuracy, "val_accuracy": accuracy, "wall_s": 0.0}
        (out_dir / "metrics.json").write_text(json.dumps(metrics))
        return FinalMetrics(accuracy, accuracy, 0.0)


def _train_checkpoint(arch: ArchConfig, rung: RungBudget) -> None:
    """Continue the fake checkpoint to ``rung.epochs`` (afresh when it is past them) and write
    what was trained to the ledger."""
    assert rung.checkpoint is not None
    path = rung.checkpoint
    start = json.loads(path.read_text())["epochs"] if path.is_file() else 0
    if start > rung.epochs:
        start = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"epochs": rung.epochs}))
    entry = {"archid": arch.archid, "start": start, "stop": rung.epochs}
    with open(path.parent / LEDGER, "a") as ledger:
        ledger.write(json.dumps(entry) + "\n")


class FakeTraining(FakeEvaluator):
    """Real ``count_ace`` with the search's cost table (like the proxy evaluator), fake
    training: what a test of the cost table needs."""

    def __init__(self, setup: EvaluatorSetup, delay_s: float = 0.0) -> None:
        super().__init__(delay_s, top=_top(setup))
        self._real = ProxyEvaluator(setup)

    def cost(self, arch: ArchConfig) -> CostSummary:
        return self._real.cost(arch)


def _delay() -> float:
    return float(os.environ.get(DELAY_ENV, "0") or 0)


def _top(setup: EvaluatorSetup) -> int | None:
    return setup.rungs[-1] if setup.rungs else None


def fake(setup: EvaluatorSetup) -> FakeEvaluator:
    return FakeEvaluator(delay_s=_delay(), top=_top(setup))


def fake_training(setup: EvaluatorSetup) -> FakeTraining:
    return FakeTraining(setup, delay_s=_delay())


def broken(setup: EvaluatorSetup) -> FakeEvaluator:
    """A factory that always fails: a worker that cannot start (tests of restarts)."""
    raise RuntimeError("this evaluator cannot start")


#: the fake evaluator that stops its own process at a chosen moment (:func:`killer`).
KILLER = "tests.search_tests.fakes:killer"
#: ``MOMENT:SIGNAL``: ``fit`` (right after the trial's genome was sampled, its parameters
#: not yet written), ``cost`` or ``proxy`` (training), and ``KILL`` or ``INT``.
KILL_ENV = "PIKENAS_FAKE_KILL_AT"


class _Killer(FakeEvaluator):
    def __init__(self, moment: str, signal_name: str) -> None:
        super().__init__()
        self.moment, self.signal_name = moment, signal_name

    def _maybe_die(self, moment: str) -> None:
        import signal

        if moment == self.moment:
            os.kill(os.getpid(), getattr(signal, f"SIG{self.signal_name}"))
            time.sleep(5)  # SIGINT arrives as KeyboardInterrupt here

    def fit(self, arch: ArchConfig) -> ArchConfig:
        self._maybe_die("fit")
        return arch

    def cost(self, arch: ArchConfig) -> CostSummary:
        self._maybe_die("cost")
        return super().cost(arch)

    def proxy(self, arch: ArchConfig, rung: RungBudget | None = None) -> ProxyMetrics:
        self._maybe_die("proxy")
        return super().proxy(arch, rung)


def killer(setup: EvaluatorSetup) -> FakeEvaluator:
    """A fake evaluator whose process kills itself at the first trial's moment of
    :data:`KILL_ENV` (a worker killed right after it asked for its first trial); a moment
    that is none of fit, cost, proxy (``never:KILL``) never kills."""
    moment, _, signal_name = os.environ.get(KILL_ENV, "fit:KILL").partition(":")
    return _Killer(moment, signal_name or "KILL")
