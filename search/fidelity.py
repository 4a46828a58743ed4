"""Pareto successive halving: the ``fidelity:`` section of a search and its rung decisions.

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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import Field, field_validator

from pikenas.results.pareto import promotion_order
from pikenas.results.record import RungResult
from pikenas.space._strict import StrictModel

__all__ = ["CHANCE_SIGMAS", "Decision", "FidelityConfig", "at_chance", "decide"]

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
