"""Per-trial overhead of the Ray backend, and its throughput on digits against the local backend.

Run: ``.venv/bin/python benchmarks/ray_overhead.py`` (about 4 minutes on 2 cores; ``--quick``
for a smaller run, ``--skip-proxy`` for the overhead part only).

1. Overhead: the Ray backend places 2 actors on a local Ray, each running the one trial loop
   with the tests' zero-cost fake evaluator (the trial costs nothing, so all time is
   orchestration: the ask lock, Optuna ask / tell on the run's journal file, the study
   contract). Printed: the wall time of the backend (Ray start-up included), the time until the
   first trial completes (actor start-up), and in the steady state the interval between
   completed trials and the overhead per trial per worker slot (interval x slots; the goal is
   <= 0.15 s, what Ray Tune with reused actors cost before).
2. Throughput: the embedded digits search (the default proxy budget) with 2 workers, through the
   command line, ``--backend ray`` against ``--backend local``, same trials and seed: wall time
   of the command and trials per hour between the first trial's start and the last one's end.
   Both start with the config's four zoo baselines and seed their workers' samplers
   ``seed + worker index``; the candidates still differ after the baselines (which worker asks
   which trial is a race), so their training costs differ somewhat too.

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
sys.path.insert(0, str(ROOT))  # the tests' fake evaluator
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

    from pikenas.results.storage import open_storage

    study = optuna.load_study(study_name=study_name, storage=open_storage(run_dir))
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    start = min(trial.datetime_start.timestamp() for trial in trials)
    done = sorted(trial.datetime_complete.timestamp() - start for trial in trials)
    return Timeline(first_start=start, completions=done)


def overhead(trials: int, workers: int = 2) -> tuple[float, Timeline]:
    """Zero-cost trials through the Ray backend, driven from this process; (wall s, timeline)."""
    import optuna

    from pikenas.search.config import config_from_dict
    from pikenas.search.pipeline import prepare_run, run_backend
    from pikenas.search.spec import RayPlacement, RunRequest, WorkerSpec
    from tests.search_tests.fakes import FAKE

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = config_from_dict({"space": SPACE, "search": {"sampler": "random"}})
    with tempfile.TemporaryDirectory(prefix="pikenas-ray-bench-") as folder:
        run_dir = Path(folder)
        spec = WorkerSpec(
            config=config, storage=str(run_dir / "study.log"), n_trials=trials, evaluator=FAKE
        )
        request = RunRequest(
            worker=spec,
            out=run_dir,
            workers=workers,
            backend="ray",
            ray=RayPlacement(cpus_per_trial=1),
        )
        prepare_run(request)
        started = time.perf_counter()
        run_backend(request)
        wall = time.perf_counter() - started
        return wall, _timeline(run_dir)


def _print_overhead(wall: float, line: Timeline, workers: int) -> None:
    interval = line.steady_interval_s
    print(
        f"  {len(line.completions):>3} trials  wall {wall:6.1f} s (Ray start-up included)  "
        f"first trial done after {line.completions[0]:5.1f} s  "
        f"steady: one trial every {interval:.4f} s = {interval * workers:.4f} s per trial "
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
    workers = 2
    overhead_trials, proxy_trials = (40, 6) if args.quick else (200, 12)

    print(f"Ray backend overhead, zero-cost evaluator, {workers} actors, {os.cpu_count()} CPUs")
    wall, line = overhead(overhead_trials, workers=workers)
    _print_overhead(wall, line, workers)

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
