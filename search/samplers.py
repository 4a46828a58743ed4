"""Optuna samplers by name: ``SAMPLERS[name](seed, population_size) -> BaseSampler``.

All are multi-objective capable (the study maximizes accuracy and minimizes ACE v2). The space
is all-categorical genes of fixed length (:mod:`space.searchspace`):

* ``nsga2`` (default): NSGA-II; ``population_size`` candidates per generation, uniform
  crossover and per-gene mutation act directly on the genes. With successive halving a
  candidate stopped at a rung is a member of its generation too, with its last rung's accuracy
  (a pessimistic estimate: an accuracy after fewer epochs) — else a generation would wait for
  ``population_size`` candidates to reach the top rung, and NSGA-II would stay random sampling
  for most of the search (:class:`RungAwareNSGAII`);
* ``tpe``: multivariate multi-objective TPE (MOTPE) with the constant liar for parallel workers;
* ``random``: uniform random genomes (the baseline of ``benchmarks/search_quality.py``);
* ``gp``: Gaussian-process Bayesian optimization (log EHVI with several objectives);
* ``qmc``: scrambled Sobol points; it only places numeric parameters, so on the all-categorical
  pikenas space its genes come from its independent (random) sampler.

Samplers read the whole study from the storage, so workers sharing a storage cooperate; each
worker gets its own seed (``seed + worker index``) so that they do not propose the same genomes.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from pikenas.results.record import TrialRecord
from pikenas.space.registry import Registry

__all__ = ["SAMPLERS", "RungAwareNSGAII", "SamplerFactory", "make_sampler"]

SamplerFactory = Callable[[int | None, int], optuna.samplers.BaseSampler]

SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


def _quiet() -> None:
    # Experimental-feature warnings (multivariate TPE, GP) would repeat in every worker.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _as_member(trial: FrozenTrial) -> FrozenTrial | None:
    """``trial`` as a GA population member: COMPLETE as it is; stopped at a rung as a COMPLETE
    copy valued ``(last rung accuracy, ACE v2)``; else None."""
    if trial.state == TrialState.COMPLETE:
        return trial
    if trial.state != TrialState.PRUNED:
        return None
    record = TrialRecord.of(trial)
    if record.status != "stopped" or record.last_rung is None or record.ace_v2 is None:
        return None
    member = copy.copy(trial)
    member.state = TrialState.COMPLETE
    member.values = [record.last_rung.val_accuracy, record.ace_v2]
    return member


class RungAwareNSGAII(optuna.samplers.NSGAIISampler):
    """NSGA-II whose generations count candidates stopped at a rung (see the module
    docstring); without successive halving it is Optuna's NSGA-II unchanged."""

    def _members(self, study: optuna.Study) -> list[FrozenTrial]:
        trials = study._get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED), use_cache=True
        )
        return [member for trial in trials if (member := _as_member(trial)) is not None]

    def get_trial_generation(self, study: optuna.Study, trial: FrozenTrial) -> int:
        key = self._get_generation_key()
        generation = trial.system_attrs.get(key, None)
        if generation is not None:
            return generation
        counts: dict[int, int] = {}
        for member in self._members(study):
            number = member.system_attrs.get(key, -1)
            counts[number] = counts.get(number, 0) + 1
        latest = max(counts, default=0)
        latest = max(latest, 0)
        assert self._population_size is not None
        generation = latest if counts.get(latest, 0) < self._population_size else latest + 1
        study._storage.set_trial_system_attr(trial._trial_id, key, generation)
        return generation

    def get_population(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        key = self._get_generation_key()
        return [m for m in self._members(study) if m.system_attrs.get(key, None) == generation]

    def get_parent_population(self, study: optuna.Study, generation: int) -> list[FrozenTrial]:
        parents = super().get_parent_population(study, generation)
        return [member for trial in parents if (member := _as_member(trial)) is not None]


@SAMPLERS.register("nsga2")
def _nsga2(seed: int | None, population_size: int) -> optuna.samplers.BaseSampler:
    return RungAwareNSGAII(population_size=population_size, seed=seed)


@SAMPLERS.register("tpe")
def _tpe(seed: int | None, population_size: int) -> optuna.samplers.BaseSampler:
    _quiet()
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        constant_liar=True,
        n_startup_trials=population_size,
    )


@SAMPLERS.register("random")
def _random(seed: int | None, population_size: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


@SAMPLERS.register("gp")
def _gp(seed: int | None, population_size: int) -> optuna.samplers.BaseSampler:
    _quiet()
    return optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=population_size, warn_independent_sampling=False
    )


@SAMPLERS.register("qmc")
def _qmc(seed: int | None, population_size: int) -> optuna.samplers.BaseSampler:
    _quiet()
    return optuna.samplers.QMCSampler(
        seed=seed,
        scramble=True,
        warn_independent_sampling=False,
        warn_asynchronous_seeding=False,
    )


def make_sampler(
    name: str, seed: int | None = None, population_size: int = 12
) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` (unknown names raise :class:`UnknownNameError` listing the valid)."""
    return SAMPLERS.get(name)(seed, population_size)
