"""Per-trial overhead of the Ray backend, and its throughput on digits against the local backend.

Run: ``.venv/bin/python benchmarks/ray_overhead.py`` (about 4 minutes on 2 cores; ``--quick``
for a smaller run, ``--skip-proxy`` for the overhead part only).

1. Overhead: a local Ray with 2 worker slots runs the zero-cost fake evaluator (``fake``: the
   trial costs nothing, so all time is orchestration: Optuna ask / tell on the journal file,
   Tune scheduling, the actor call, the report). Printed: ``ray.init``, the time until the first
   trial completes (actor start-up), and in the steady state the interval between completed
   trials and the overhead per trial per worker slot (interval x slots; the goal is <= 0.5 s with
   actor reuse), with and without actor reuse.
2. Throughput: the embedded digits search (the default proxy budget) with 2 workers, through the
   command line, ``--backend ray`` against ``--backend local``, same trials and seed: wall time
   of the command and trials per hour between the first trial's start and the last one's end.
   Both start with the config's four zoo baselines; after them the candidates differ (the local
   workers seed their samplers ``seed + worker index``, the Ray driver ``seed``), so their
   training costs differ somewhat too.

Timings vary by 20-30 % from run to run on a shared machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIKENAS = str(Path(sys.executable).with_name("pikenas"))
SPACE = {"stages": [{"blocks": 1, "stride": 1, "channels": [8, 16]}]}


@dataclass
class Timeline:
    """Completion times (s, relative to the first trial's start) of a run's COMPLETE trials."""

    first_start: float
    completions: list[float]

    @property
    def steady_interval_s(self) -> float:
        """Median gap between consecutive completions, after the first two (start-up)."""
        gaps = [b - a for a, b in zip(self.completions[2:], self.completions[3:], strict=False)]
        return statistics.median(gaps) if gaps else float("nan")

    @property
    def span_s(self) -> float:
        return self.completions[-1] if self.completions else float("nan")


def _timeline(run_dir: Path, study_name: str = "pikenas") -> Timeline:
    import optuna
    from optuna.trial import TrialState

    from results.storage import open_storage

    study = optuna.load_study(study_name=study_name, storage=open_storage(run_dir))
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    start = min(trial.datetime_start.timestamp() for trial in trials)
    done = sorted(trial.datetime_complete.timestamp() - start for trial in trials)
    return Timeline(first_start=start, completions=done)


def overhead(trials: int, reuse: bool, workers: int = 2) -> tuple[float, Timeline]:
    """Zero-cost trials through the Ray backend in this process; (wall s, timeline)."""
    import optuna

    from results.storage import open_storage
    from search._ray_backend import run_ray_search
    from search.config import config_from_dict
    from search.objective import DIRECTIONS
    from search.samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = config_from_dict({"space": SPACE})
    with tempfile.TemporaryDirectory(prefix="pikenas-ray-bench-") as folder:
        run_dir = Path(folder)
        study = optuna.create_study(
            storage=open_storage(run_dir, create=True),
            study_name="pikenas",
            directions=list(DIRECTIONS),
        )
        started = time.perf_counter()
        run_ray_search(
            config,
            study,
            make_sampler("random", 0, 4),
            n_trials=trials,
            out_dir=run_dir,
            evaluator_spec="fake",
            workers=workers,
            reuse_actors=reuse,
            shutdown=False,
        )
        wall = time.perf_counter() - started
        return wall, _timeline(run_dir)


def _print_overhead(label: str, wall: float, line: Timeline, workers: int) -> None:
    interval = line.steady_interval_s
    print(
        f"  {label:<22} {len(line.completions):>3} trials  wall {wall:6.1f} s  "
        f"first trial done after {line.completions[0]:5.1f} s  "
        f"steady: one trial every {interval:.3f} s = {interval * workers:.3f} s per trial "
        f"per worker slot"
    )


def search_cli(backend: str, trials: int, workers: int, run_dir: Path) -> tuple[float, Timeline]:
    """``pikenas search`` (embedded digits default) with ``backend``; (wall s, timeline)."""
    command = [PIKENAS, "search", "--out", str(run_dir), "--trials", str(trials)]
    command += ["--workers", str(workers), "--seed", "0", "--full-train-top", "0"]
    command += ["--backend", backend, "--no-export"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return wall, _timeline(run_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials everywhere")
    parser.add_argument("--skip-proxy", action="store_true", help="overhead part only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    workers = 2
    reuse_trials, fresh_trials, proxy_trials = (20, 6, 6) if args.quick else (60, 10, 12)

    import ray

    from search._ray_backend import ray_environment

    os.environ.update(ray_environment())
    print(
        f"Ray backend overhead, zero-cost evaluator, {workers} worker slots, {os.cpu_count()} CPUs"
    )
    started = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=workers,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        log_to_driver=False,
    )
    print(f"  ray.init (local, 127.0.0.1): {time.perf_counter() - started:.2f} s")
    try:
        wall, line = overhead(reuse_trials, reuse=True, workers=workers)
        _print_overhead("reuse_actors=True", wall, line, workers)
        wall, line = overhead(fresh_trials, reuse=False, workers=workers)
        _print_overhead("reuse_actors=False", wall, line, workers)
    finally:
        ray.shutdown()

    if args.skip_proxy:
        return
    print(
        f"\nThroughput on digits (embedded default proxy budget), {workers} workers, "
        f"{proxy_trials} trials, seed 0"
    )
    print(f"  {'backend':<8} {'command wall':>13} {'search span':>12} {'trials/hour':>12}")
    for backend in ("local", "ray"):
        with tempfile.TemporaryDirectory(prefix=f"pikenas-{backend}-bench-") as folder:
            wall, line = search_cli(backend, proxy_trials, workers, Path(folder) / "run")
        per_hour = 3600 * len(line.completions) / line.span_s
        print(f"  {backend:<8} {wall:>11.1f} s {line.span_s:>10.1f} s {per_hour:>12.0f}")


if __name__ == "__main__":
    main()
