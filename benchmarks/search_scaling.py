"""Trials per hour of the local backend with 2 workers against 1, on the digits default proxy.

Both runs evaluate the same candidates: the same seeded random genomes are enqueued into each
study (no zoo baselines), so the work is identical and only the parallelism differs. The rate is
measured from the first trial's start to the last trial's end (worker start-up excluded; it is
printed separately as the wall time of the whole run). Each worker gets ``cores // workers``
torch threads, as ``pikenas search`` sets them.

Goal on 2 cores: 2 workers >= 1.7 x the trials per hour of 1 worker.
Run: ``.venv/bin/python benchmarks/search_scaling.py [--trials 10] [--epochs E]``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState


def _run(config, genomes: list[dict], workers: int, out: Path) -> tuple[float, float]:
    from pikenas.search.local import run_local
    from pikenas.search.pipeline import prepare_run
    from pikenas.search.spec import RunRequest, WorkerSpec

    spec = WorkerSpec(config=config, storage=str(out / "study.log"), n_trials=len(genomes), seed=0)
    request = RunRequest(worker=spec, out=out, workers=workers)
    study = prepare_run(request)
    for genome in genomes:
        study.enqueue_trial(genome)
    start = time.perf_counter()
    run_local(request, None)
    wall = time.perf_counter() - start
    trials = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    first = min(t.datetime_start for t in trials)
    last = max(t.datetime_complete for t in trials)
    return (last - first).total_seconds(), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="proxy epochs (default: config)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    from pikenas.search.config import load_config
    from pikenas.search.spec import available_cores

    base = load_config()
    epochs = base.train_config("proxy").epochs if args.epochs is None else args.epochs
    config = base.model_copy(
        update={
            "baselines": (),
            "proxy": {**base.proxy, "epochs": epochs},
            "fidelity": None,  # every candidate the same fixed budget (the top rung's epochs)
            "search": base.search.model_copy(update={"trials": args.trials}),
        }
    )
    rng = random.Random(args.seed)
    genes = config.space.distributions()
    genomes = [{n: rng.choice(c) for n, c in genes.items()} for _ in range(args.trials)]
    print(
        f"local backend, digits default proxy ({config.to_dict()['proxy']}), "
        f"{args.trials} identical candidates, {available_cores()} cores"
    )
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            busy, wall = _run(config, genomes, workers, Path(tmp) / f"w{workers}")
            rates[workers] = args.trials / busy * 3600
            print(
                f"  {workers} worker(s): {rates[workers]:8.0f} trials/hour "
                f"({busy:.1f} s for {args.trials} trials; whole run incl. start-up {wall:.1f} s)"
            )
    speedup = rates[2] / rates[1]
    verdict = "met" if speedup >= 1.7 else "NOT met"
    print(f"speed-up 2 vs 1 workers: {speedup:.2f} x (goal >= 1.7: {verdict})")


if __name__ == "__main__":
    main()
