"""Pareto successive halving: the ``fidelity:`` section of a search, its rung decisions, and
where rung results live in the study.

A search with ``fidelity: {rungs: [1, 3, 9], reduction: 3}`` trains every candidate on one
schedule of ``rungs[-1]`` epochs (the proxy budget), measured at each rung. At a rung below
the top, the candidate is compared with every architecture that has reached that rung so far
(whatever became of it later; one entry per archid) and trains on only when it is among the
first ``ceil(n / reduction)`` of those ``n`` and fewer than that many have been promoted from
the rung so far (:func:`decide`): each rung passes on a ``1 / reduction`` share of its
entrants even when later candidates are better than earlier ones (they are, as NSGA-II
converges; without the quota two thirds of them went on), ranked by
:func:`results.pareto.promotion_order`: non-dominated rank of (rung accuracy, ACE v2), then
crowding distance within a front (the spread of the front kept), then lower ACE v2. The
decision is taken the moment the candidate reaches the rung, from what the study holds then:
asynchronous, no worker waits for a rung to fill (the "stopping" form of ASHA, as in Syne
Tune's MOASHA). Besides, a candidate whose accuracy at the first rung is indistinguishable
from chance (:func:`at_chance`) is stopped there: "does not learn".

The top rung's accuracy is exactly the accuracy a fixed budget of ``rungs[-1]`` epochs gives
(training continues from each rung's checkpoint, see :mod:`evaluators.training`), so fronts
with and without successive halving are comparable.

Rung state lives in the study only: every trial's :class:`~results.record.TrialRecord` holds
its ``rungs`` (stored the moment a rung is decided), so a rerun after a crash, another worker
or another machine sees all of it. :class:`RungIndex` gathers them by rung and by archid (the
loop's study view feeds it: finished trials once, running ones on every read).
:class:`TrialRungs` is what :func:`evaluators.candidate.run_rungs` calls for one trial; it
decides under the study's ask lock, so that no more trials are promoted into the top rung than
the study still needs (exactly N COMPLETE trials). A zoo baseline is always promoted (it is
trained to the top rung) and counts as finishing from the moment it runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from pikenas.evaluators.candidate import Decision, Evaluation, RungResult
from pikenas.results.pareto import promotion_order
from pikenas.results.record import TrialRecord
from pikenas.search._journal import flush
from pikenas.space._strict import StrictModel

if TYPE_CHECKING:
    import optuna

    from pikenas.search.lock import AskLock

__all__ = [
    "CHANCE_SIGMAS",
    "FidelityConfig",
    "RungIndex",
    "TrialRungs",
    "at_chance",
    "checkpoint_folder",
    "decide",
]

logger = logging.getLogger(__name__)

#: how many binomial standard deviations above chance a first-rung accuracy must be to count
#: as learning.
CHANCE_SIGMAS = 3.0


class FidelityConfig(StrictModel):
    """``rungs``: strictly increasing epochs (at least two; the last is the proxy budget);
    ``reduction``: the share ``1 / reduction`` of a rung that trains on."""

    rungs: tuple[int, ...] = Field(min_length=2)
    reduction: float = Field(3.0, gt=1)

    @field_validator("rungs")
    @classmethod
    def _increasing(cls, rungs: tuple[int, ...]) -> tuple[int, ...]:
        if rungs[0] < 1 or any(b <= a for a, b in zip(rungs, rungs[1:], strict=False)):
            raise ValueError(
                f"rungs {list(rungs)} must be strictly increasing epochs from 1 up, e.g. [1, 3, 9]"
            )
        return rungs

    @property
    def top(self) -> int:
        """Epochs of the top rung (the proxy budget)."""
        return self.rungs[-1]

    def next_rung(self, epochs: int) -> int | None:
        """The rung after ``epochs`` (None at the top)."""
        later = [rung for rung in self.rungs if rung > epochs]
        return later[0] if later else None


def at_chance(accuracy: float, num_classes: int, val_images: int | None) -> bool:
    """Whether ``accuracy`` on ``val_images`` images is within :data:`CHANCE_SIGMAS` binomial
    standard deviations of guessing among ``num_classes`` classes (False when the count is
    unknown)."""
    if not val_images:
        return False
    chance = 1.0 / num_classes
    sigma = math.sqrt(chance * (1 - chance) / max(1, val_images))
    return accuracy <= chance + CHANCE_SIGMAS * sigma


def decide(
    fidelity: FidelityConfig,
    epochs: int,
    archid: str,
    point: tuple[float, float],
    reached: Mapping[str, tuple[float, float]],
    *,
    num_classes: int,
    val_images: int | None,
    promoted: int = 0,
) -> Decision:
    """The decision for ``archid`` with ``point`` = (accuracy, ACE v2) at rung ``epochs``
    (below the top), given ``reached``: archid -> point of every architecture that reached
    this rung (its own entry is replaced by ``point``), and ``promoted`` of them trained on."""
    accuracy = point[0]
    if epochs == fidelity.rungs[0] and at_chance(accuracy, num_classes, val_images):
        return Decision(
            False, f"does not learn: {100 * accuracy:.1f} % after {epochs} epoch(s), chance level"
        )
    population = {**reached, archid: point}
    names = sorted(population)
    order = promotion_order(
        [population[name][0] for name in names], [population[name][1] for name in names]
    )
    rank = int(list(order).index(names.index(archid)))
    count = len(names)
    kept = math.ceil(count / fidelity.reduction)
    place = f"rung {epochs} epochs: Pareto place {rank + 1} of {count}"
    if rank >= kept:
        return Decision(False, f"{place}, only the first {kept} train on", rank, count)
    if promoted >= kept:
        limit = f"at most 1 in {fidelity.reduction:g}"
        reason = f"{place}, but {promoted} of them trained on already ({limit})"
        return Decision(False, reason, rank, count)
    return Decision(True, None, rank, count)


def checkpoint_folder(checkpoints: str | Path | None, study_name: str) -> Path | None:
    """The folder of a study's proxy checkpoints (one file per archid) under ``checkpoints``."""
    return Path(checkpoints) / study_name if checkpoints is not None else None


class RungIndex:
    """Rung results of a study: points ``(accuracy, ACE v2)`` by rung epochs and archid, and
    every archid's results with the trial they came from. ``finishing``: RUNNING trials that
    were promoted into the top rung, and RUNNING zoo baselines (always trained to it)."""

    def __init__(self, fidelity: FidelityConfig) -> None:
        self.fidelity = fidelity
        self._finished: dict[str, tuple[int, dict[int, RungResult], float]] = {}
        self._running: dict[str, tuple[int, dict[int, RungResult], float]] = {}
        self.finishing = 0

    def start_running(self) -> None:
        self._running = {}
        self.finishing = 0

    def add(self, number: int, record: TrialRecord, running: bool) -> None:
        """Index ``record`` of trial ``number`` (a finished one once, a running one on every
        read, after :meth:`start_running`). A record with rungs but no ACE v2 is not indexed
        (never scored as free)."""
        if running and record.baseline is not None and record.status != "duplicate":
            self.finishing += 1  # trained to the top rung whatever its rungs say
        elif running and record.rungs:  # promoted into the top rung, or done, to be told
            last = record.rungs[-1]
            below_top = self.fidelity.rungs[-2]
            self.finishing += (last.decision == "promoted" and last.epochs == below_top) or (
                last.decision == "top"
            )
        if not record.rungs or not record.archid:
            return
        if record.ace_v2 is None:
            if not running:
                logger.warning("trial %d has rung results but no ace_v2: not ranked", number)
            return
        entries = self._running if running else self._finished
        results = {rung.epochs: rung for rung in record.rungs}
        held = entries.get(record.archid)
        if held is None or len(results) > len(held[1]):
            entries[record.archid] = (number, results, float(record.ace_v2))

    def _entries(self) -> dict[str, tuple[int, dict[int, RungResult], float]]:
        merged = dict(self._finished)
        for archid, entry in self._running.items():
            if archid not in merged or len(entry[1]) > len(merged[archid][1]):
                merged[archid] = entry
        return merged

    def points(self, epochs: int) -> dict[str, tuple[float, float]]:
        """archid -> (accuracy, ACE v2) of every architecture measured at rung ``epochs``."""
        return {
            archid: (results[epochs].val_accuracy, ace_v2)
            for archid, (_, results, ace_v2) in self._entries().items()
            if epochs in results
        }

    def promoted(self, epochs: int) -> set[str]:
        """archids promoted at rung ``epochs``."""
        return {
            archid
            for archid, (_, results, _) in self._entries().items()
            if epochs in results and results[epochs].decision == "promoted"
        }

    def known(self, archid: str, exclude: int) -> tuple[int | None, dict[int, RungResult]]:
        """``archid``'s rung results from a trial other than ``exclude``, and its number."""
        entry = self._entries().get(archid)
        if entry is None or entry[0] == exclude:
            return None, {}
        return entry[0], dict(entry[1])


class TrialRungs:
    """:class:`evaluators.candidate.Rungs` for one trial of a worker's loop. ``refresh()``
    (called under the lock) brings the loop's study view, with its :class:`RungIndex`, up to
    date and returns the COMPLETE trials and the RUNNING ones that will be COMPLETE unless they
    fail. ``baseline``: the trial is a zoo baseline, promoted at every rung (its rung results
    still rank the others); it was counted as finishing when it started."""

    def __init__(
        self,
        study: optuna.Study,
        trial_id: int,
        number: int,
        *,
        fidelity: FidelityConfig,
        index: RungIndex,
        refresh: Callable[[], tuple[int, int]],
        lock: AskLock,
        n_trials: int,
        checkpoints: Path | None,
        baseline: bool = False,
    ) -> None:
        self.study = study
        self.trial_id = trial_id
        self.number = number
        self.fidelity = fidelity
        self.index = index
        self.refresh = refresh
        self.lock = lock
        self.n_trials = n_trials
        self.checkpoints = checkpoints
        self.baseline = baseline

    @property
    def epochs(self) -> tuple[int, ...]:
        return self.fidelity.rungs

    def known(self, archid: str) -> tuple[int | None, dict[int, RungResult]]:
        with self.lock:
            self.refresh()
            return self.index.known(archid, exclude=self.number)

    def checkpoint(self, archid: str) -> Path | None:
        return self.checkpoints / f"{archid}.safetensors" if self.checkpoints else None

    def decide(self, evaluation: Evaluation, result: RungResult) -> Decision:
        if evaluation.arch is None:
            raise ValueError("a rung is decided for a fitted, costed candidate only")
        archid = evaluation.arch.archid
        point = (result.val_accuracy, evaluation.ace_v2)  # no ACE v2: an error, never free
        with self.lock:
            complete, finishing = self.refresh()
            reached = {k: v for k, v in self.index.points(result.epochs).items() if k != archid}
            promoted = len(self.index.promoted(result.epochs) - {archid})
            decision = decide(
                self.fidelity,
                result.epochs,
                archid,
                point,
                reached,
                num_classes=evaluation.arch.num_classes,
                val_images=result.val_images,
                promoted=promoted,
            )
            if self.baseline:
                decision = Decision(True, None, decision.rank, decision.of)
            elif decision.promote and complete + finishing >= self.n_trials:
                decision = Decision(
                    False,
                    f"the study has its {self.n_trials} trials at the top rung (or training to it)",
                    decision.rank,
                    decision.of,
                )
            rungs = (*evaluation.rungs, decision.applied_to(result))
            attrs = TrialRecord(rungs=rungs).to_attrs()
            storage = self.study._storage
            storage.set_trial_user_attr(self.trial_id, "rungs", attrs["rungs"])
            flush(storage)  # the rung result and its promotion are visible at once
        return decision
