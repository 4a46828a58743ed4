"""Optuna samplers by name: ``SAMPLERS[name](seed, population_size) -> BaseSampler``.

All are multi-objective capable (the study maximizes accuracy and minimizes ACE v2). The space
is all-categorical genes of fixed length (:mod:`space.searchspace`):

* ``nsga2`` (default): NSGA-II; ``population_size`` candidates per generation, uniform
  crossover and per-gene mutation act directly on the genes;
* ``tpe``: multivariate multi-objective TPE (MOTPE) with the constant liar for parallel workers;
* ``random``: uniform random genomes (the baseline of ``benchmarks/search_quality.py``);
* ``gp``: Gaussian-process Bayesian optimization (log EHVI with several objectives);
* ``qmc``: scrambled Sobol points; it only places numeric parameters, so on the all-categorical
  pikenas space its genes come from its independent (random) sampler.

Samplers read the whole study from the storage, so workers sharing a storage cooperate; each
worker gets its own seed (``seed + worker index``) so that they do not propose the same genomes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import optuna

from space.registry import Registry

__all__ = ["SAMPLERS", "SamplerFactory", "make_sampler"]

SamplerFactory = Callable[[int | None, int], optuna.samplers.BaseSampler]

SAMPLERS: Registry[SamplerFactory] = Registry("sampler")


def _quiet() -> None:
    # Experimental-feature warnings (multivariate TPE, GP) would repeat in every worker.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


@SAMPLERS.register("nsga2")
def _nsga2(seed: int | None, population_size: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed)


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
