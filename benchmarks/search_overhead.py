"""Per-trial orchestration overhead of pikenas against raw Optuna, zero-cost evaluator.

Both sides use a journal file storage (what ``pikenas search`` uses by default), the same
sampler (random, so sampling costs the same) and the default digits space (43 genes):

* ``raw optuna``: ``study.ask()``, ``suggest_categorical`` for every gene, ``study.tell``;
* ``pikenas``: :func:`search.worker.work` with the fake evaluator: the ask lock and trial
  count, worker label, heartbeat thread, decode to an ArchConfig, fake ACE and accuracy,
  duplicate lookup, the docs/study_contract.md user attributes, tell; on the buffered journal
  storage (one append per batch of writes) as the local backend runs it;
* ``pikenas, unbuffered``: the same on Optuna's plain journal storage (one ``fsync`` per
  parameter and attribute), to show what the buffering buys.

Goal: pikenas <= 1.2 x raw Optuna. Run: ``.venv/bin/python benchmarks/search_overhead.py``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna


def _raw(directory: Path, trials: int) -> float:
    from results.storage import open_storage
    from search.config import load_config

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
    from results.storage import open_storage
    from search._journal import buffered
    from search.config import load_config
    from search.objective import FakeEvaluator
    from search.worker import FileLock, work

    config = load_config()
    storage = open_storage(directory, create=True)
    if buffered_storage:
        storage = buffered(storage)
    study = optuna.create_study(
        storage=storage,
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    start = time.perf_counter()
    summary = work(
        study, config.space, FakeEvaluator(), trials, ask_lock=FileLock(directory / "ask.lock")
    )
    elapsed = time.perf_counter() - start
    # duplicates are complete trials too, so every iteration counts
    assert summary.complete == trials, summary
    return elapsed / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    import search.config  # noqa: F401 - imports out of the timings

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
