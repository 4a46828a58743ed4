"""Per-trial orchestration overhead of pikenas against raw Optuna, zero-cost evaluator.

Both sides use a journal file storage (what ``pikenas search`` uses by default), the same
sampler (random, so sampling costs the same) and the default digits space (43 genes):

* ``raw optuna``: ``study.ask()``, ``suggest_categorical`` for every gene, ``study.tell``;
* ``pikenas``: the one trial loop :func:`search.loop.work` as every worker runs it, with the
  tests' zero-cost fake evaluator: the ask lock and trial count, worker label, heartbeat
  thread, decode to an ArchConfig, fake ACE and accuracy, the archid claim under the lock,
  the study contract's records, tell; on the buffered journal storage (one append per batch of
  writes) with the run's file lock;
* ``pikenas, unbuffered``: the same on Optuna's plain journal storage (one ``fsync`` per
  parameter and attribute), to show what the buffering buys.

Goal: pikenas <= 1.2 x raw Optuna. Run: ``.venv/bin/python benchmarks/search_overhead.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fake evaluator


def _raw(directory: Path, trials: int) -> float:
    from pikenas.results.storage import open_storage
    from pikenas.search.config import load_config

    genes = load_config().space.distributions()
    study = optuna.create_study(
        storage=open_storage(directory, create=True),
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    start = time.perf_counter()
    for _ in range(trials):
        trial = study.ask()
        for name, choices in genes.items():
            trial.suggest_categorical(name, list(choices))
        study.tell(trial, [0.5, 1000.0])
    return (time.perf_counter() - start) / trials


def _pikenas(directory: Path, trials: int, buffered_storage: bool) -> float:
    from pikenas.results.storage import open_storage
    from pikenas.search._journal import buffered
    from pikenas.search.config import load_config
    from pikenas.search.lock import ask_lock
    from pikenas.search.loop import work
    from pikenas.search.study import open_search_study
    from tests.search_tests.fakes import FakeEvaluator

    config = load_config().model_copy(update={"baselines": ()})
    storage = open_storage(directory, create=True)
    if buffered_storage:
        storage = buffered(storage)
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = open_search_study(config, storage, "pikenas", sampler)
    lock = ask_lock(directory / "study.log", "pikenas")
    start = time.perf_counter()
    report = work(study, config.space, FakeEvaluator(), trials, ask_lock=lock)
    elapsed = time.perf_counter() - start
    lock.close()
    # duplicates are complete trials too, so every iteration counts
    assert report.complete == trials, report
    return elapsed / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import pikenas.search.config  # noqa: F401 - imports out of the timings

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, run in (
            ("raw optuna ask/suggest/tell", lambda d: _raw(d, args.trials)),
            ("pikenas (buffered journal)", lambda d: _pikenas(d, args.trials, True)),
            ("pikenas, unbuffered journal", lambda d: _pikenas(d, args.trials, False)),
        ):
            directory = Path(tmp) / label.split()[0] / str(len(rows))
            directory.mkdir(parents=True)
            rows.append((label, run(directory)))
    raw = rows[0][1]
    print(f"per-trial orchestration, journal storage, {args.trials} trials, zero-cost evaluator")
    for label, seconds in rows:
        print(f"  {label:32s} {seconds * 1000:8.1f} ms/trial   {seconds / raw:5.2f} x raw")
    ratio = rows[1][1] / raw
    print(
        f"goal pikenas <= 1.2 x raw optuna: {'met' if ratio <= 1.2 else 'NOT met'} ({ratio:.2f} x)"
    )


if __name__ == "__main__":
    main()
