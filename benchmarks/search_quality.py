"""Hypervolume after N trials: NSGA-II against random sampling on digits, same seeds.

Each (sampler, seed) pair runs one in-process worker (:func:`search.loop.work`) with the real
evaluator (ACE v2 counting and proxy training on digits with a shortened proxy: ``--epochs``,
default 2) until N COMPLETE trials, without zoo baselines so that both samplers start from
nothing. Hypervolume (accuracy x ACE v2, :func:`results.pareto.hypervolume`) uses one reference
point for all runs: accuracy 0 and 1.1 x the largest ACE v2 seen in any run. Reported, not
asserted: with tens of trials the difference is within seed noise.

Run: ``.venv/bin/python benchmarks/search_quality.py [--trials 24] [--seeds 0 1]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState


def _search(config, sampler: str, seed: int, trials: int, directory: Path) -> list[tuple]:
    import torch

    from pikenas.evaluators.candidate import ProxyEvaluator
    from pikenas.results.storage import open_storage
    from pikenas.search._journal import buffered
    from pikenas.search.loop import work
    from pikenas.search.samplers import make_sampler
    from pikenas.search.study import open_search_study

    torch.set_num_threads(1)
    storage = buffered(open_storage(directory, create=True))
    sampler_object = make_sampler(sampler, seed, config.search.population_size)
    study = open_search_study(config, storage, "pikenas", sampler_object)
    work(study, config.space, ProxyEvaluator(config.evaluator_setup(threads=1)), trials)
    return [
        (t.number, t.values[0], t.values[1])
        for t in study.get_trials()
        if t.state == TrialState.COMPLETE
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--population-size", type=int, default=8)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    from pikenas.results.pareto import hypervolume
    from pikenas.search.config import load_config

    base = load_config()
    config = base.model_copy(
        update={
            "baselines": (),
            "proxy": {**base.proxy, "epochs": args.epochs},
            "fidelity": None,  # a fixed proxy budget
            "search": base.search.model_copy(update={"population_size": args.population_size}),
        }
    )
    runs: dict[tuple[str, int], list[tuple]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for sampler in ("nsga2", "random"):
                directory = Path(tmp) / f"{sampler}-{seed}"
                directory.mkdir()
                runs[(sampler, seed)] = _search(config, sampler, seed, args.trials, directory)
    worst_ace = max(ace for points in runs.values() for _, _, ace in points)
    reference = (0.0, 1.1 * worst_ace)
    print(
        f"digits, proxy {args.epochs} epochs, {args.trials} trials per run, NSGA-II population "
        f"{args.population_size}, reference point (accuracy 0, ACE v2 {reference[1]:.4g}); "
        f"{time.perf_counter() - start:.0f} s"
    )
    for sampler in ("nsga2", "random"):
        values = []
        for seed in args.seeds:
            points = runs[(sampler, seed)]
            volume = hypervolume([p[1] for p in points], [p[2] for p in points], reference)
            values.append(volume)
            best = max(p[1] for p in points)
            print(
                f"  {sampler:7s} seed {seed}: hypervolume {volume:.4g}  (best accuracy {best:.4f})"
            )
        print(f"  {sampler:7s} mean hypervolume {sum(values) / len(values):.4g}")


if __name__ == "__main__":
    main()
