"""Front per CPU-second: fixed-budget NSGA-II, Pareto successive halving, Optuna's default
sampler and Syne Tune's MOASHA on the same evaluator, side by side in one run.

Every method searches the default digits space (no zoo baselines, so all start from nothing)
with the real pikenas evaluator (ACE v2 counted from the integer program, QAT proxy training),
one torch thread per process, for the same budget of process CPU seconds (``--cpu-budget``,
training, sampling and bookkeeping together), ``--seeds`` seeds each. Every method's top
fidelity is the same ``E`` epochs (``--rungs``' last), so the same architecture gets the same
accuracy in every method and fronts are comparable:

* ``nsga2-fixed``: today's search: NSGA-II, every candidate trained E epochs;
* ``nsga2-sh`` / ``random-sh``: NSGA-II / random sampling with Pareto successive halving
  (``fidelity: {rungs, reduction: 3}``), through the pikenas trial loop;
* ``optuna-default``: Optuna 5's default sampler for a multi-objective study
  (``TPESampler()``), E epochs each, through the same loop;
* ``moasha``: Syne Tune's ``MOASHA`` (random configurations, stopping-type asynchronous
  successive halving, non-dominated sort with an epsilon-net tie-break) on the same genes and
  rungs, fed (error, log10 ACE v2) at each rung of the same resumable evaluator;
* ``nsga2-sh-depth`` (with ``--methods``): ``nsga2-sh`` on the space with searched stage depths.

Hypervolume: in (accuracy, log10 ACE v2), reference point accuracy 0.1 (chance on digits) and
log10 of 1.1 x the largest ACE v2 any run costed; only top-fidelity results count. The reference
hypervolume is the best final hypervolume of any single run (named in the output). Printed per
method: median over seeds of the CPU seconds to reach 50 / 90 / 95 % of it, and the hypervolume
at equal CPU time; and Kendall tau between each rung's accuracy and the fully trained (the
config's ``full:`` budget) test accuracy of ``--kendall`` random architectures. Writes
``OUT/efficiency.json``, ``OUT/hypervolume.html`` and ``OUT/hypervolume.png``.

Run: ``.venv/bin/python benchmarks/search_efficiency.py --cpu-budget 600 --seeds 0 1 2
--jobs 2 --out runs/bench-efficiency`` (needs the ``bench`` extra: syne-tune, kaleido).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("nsga2-fixed", "nsga2-sh", "random-sh", "optuna-default", "moasha")
EXTRA_METHODS = ("nsga2-sh-depth",)
CHANCE = 0.1


class BudgetSpent(KeyboardInterrupt):
    """Raised inside a search when its CPU budget is spent (escapes the loop's guards)."""


def _config(method: str, rungs: tuple[int, ...]):  # noqa: ANN202 - a SearchConfig
    from pikenas.search.config import config_from_dict, load_config

    data = load_config().to_dict()
    data["baselines"] = []
    data["proxy"].pop("epochs", None)
    if method.endswith("-sh") or method.endswith("-sh-depth") or method == "moasha":
        data["fidelity"] = {"rungs": list(rungs), "reduction": 3}
    else:
        data["proxy"]["epochs"] = rungs[-1]
    if method.endswith("-depth"):
        for stage in data["space"]["stages"]:
            stage["depths"] = sorted({1, 2, stage["blocks"]})
            stage.pop("blocks")
    return config_from_dict(data)


class Recorder:
    """The real evaluator, recording ``(cpu_s, archid, epochs, accuracy, ace_v2)`` at every
    proxy result and stopping the search once ``budget`` CPU seconds are spent."""

    def __init__(self, config, budget: float) -> None:  # noqa: ANN001
        from pikenas.evaluators.candidate import ProxyEvaluator

        self.real = ProxyEvaluator(config.evaluator_setup(threads=1))
        self.budget = budget
        self.start = time.process_time()
        self.events: list[tuple[float, str, int, float, float]] = []
        self.ace: dict[str, float] = {}
        self.top = config.fidelity.top if config.fidelity else config.proxy.epochs

    def spent(self) -> float:
        return time.process_time() - self.start

    def _check(self) -> None:
        if self.spent() > self.budget:
            raise BudgetSpent

    def fit(self, arch):  # noqa: ANN001, ANN201
        self._check()
        return self.real.fit(arch)

    def cost(self, arch):  # noqa: ANN001, ANN201
        summary = self.real.cost(arch)
        self.ace[arch.archid] = summary.ace_v2
        return summary

    def proxy(self, arch, rung=None):  # noqa: ANN001, ANN201
        self._check()
        metrics = self.real.proxy(arch, rung)
        epochs = rung.epochs if rung is not None else self.top
        event = (self.spent(), arch.archid, epochs, metrics.val_accuracy, self.ace[arch.archid])
        self.events.append(event)
        return metrics

    def full(self, arch, out_dir):  # noqa: ANN001, ANN201
        return self.real.full(arch, out_dir)


def _run_pikenas(method: str, seed: int, budget: float, rungs, folder: Path) -> Recorder:  # noqa: ANN001
    import optuna

    from pikenas.results.storage import open_storage
    from pikenas.search._journal import buffered
    from pikenas.search.loop import work
    from pikenas.search.samplers import make_sampler
    from pikenas.search.study import open_search_study

    config = _config(method, rungs)
    recorder = Recorder(config, budget)
    if method == "optuna-default":
        sampler = optuna.samplers.TPESampler(seed=seed)
    else:
        name = method.split("-")[0]
        sampler = make_sampler(name, seed, config.search.population_size)
    storage = buffered(open_storage(folder, create=True))
    study = open_search_study(config, storage, "pikenas", sampler)
    try:
        work(study, config.space, recorder, 100_000, fidelity=config.fidelity,
             checkpoints=folder / "checkpoints")  # fmt: skip
    except BudgetSpent:
        pass
    return recorder


def _run_moasha(seed: int, budget: float, rungs, folder: Path) -> Recorder:  # noqa: ANN001
    from datetime import datetime

    import numpy as np
    from syne_tune.backend.trial_status import Trial
    from syne_tune.config_space import choice
    from syne_tune.optimizer.scheduler import SchedulerDecision
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    from pikenas.evaluators.candidate import RungBudget

    config = _config("moasha", rungs)
    recorder = Recorder(config, budget)
    space = config.space
    np.random.seed(seed)  # MOASHA and syne-tune's domains draw from numpy's global generator
    scheduler = MOASHA(
        config_space={name: choice(list(values)) for name, values in space.distributions().items()},
        metrics=["error", "log_ace"],
        do_minimize=True,
        time_attr="epoch",
        max_t=rungs[-1],
        grace_period=rungs[0],
        reduction_factor=3,
        random_seed=seed,
    )
    known: dict[str, dict[int, float]] = {}  # reuse results of an architecture drawn again
    try:
        for trial_id in range(10**9):
            suggestion = scheduler.suggest()
            trial = Trial(trial_id=trial_id, config=suggestion.config, creation_time=datetime.now())
            scheduler.on_trial_add(trial)
            arch = recorder.fit(space.decode(suggestion.config))
            log_ace = math.log10(recorder.cost(arch).ace_v2)
            results = known.setdefault(arch.archid, {})
            checkpoint = folder / "checkpoints" / f"{arch.archid}.safetensors"
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            for epochs in rungs:
                if epochs not in results:
                    metrics = recorder.proxy(arch, RungBudget(epochs, checkpoint))
                    results[epochs] = metrics.val_accuracy
                report = {"epoch": epochs, "error": 1 - results[epochs], "log_ace": log_ace}
                if epochs == rungs[-1]:
                    scheduler.on_trial_complete(trial, report)
                    break
                if scheduler.on_trial_result(trial, report) == SchedulerDecision.STOP:
                    break
    except BudgetSpent:
        pass
    return recorder


def run_one(method: str, seed: int, budget: float, rungs, out: Path) -> None:  # noqa: ANN001
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        if method == "moasha":
            recorder = _run_moasha(seed, budget, rungs, Path(folder))
        else:
            recorder = _run_pikenas(method, seed, budget, rungs, Path(folder))
    result = {"method": method, "seed": seed, "budget": budget, "top": rungs[-1],
              "events": recorder.events}  # fmt: skip
    (out / f"{method}-{seed}.json").write_text(json.dumps(result))


def run_kendall(count: int, rungs, out: Path) -> None:  # noqa: ANN001
    """Rung accuracies and fully trained test accuracy of ``count`` random architectures."""
    import random

    import torch

    from pikenas.evaluators.candidate import ProxyEvaluator, RungBudget

    torch.set_num_threads(1)
    config = _config("nsga2-sh", rungs)
    evaluator = ProxyEvaluator(config.evaluator_setup(threads=1))
    rng = random.Random(1234)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for index in range(count):
            genome = {k: rng.choice(v) for k, v in config.space.distributions().items()}
            arch = evaluator.fit(config.space.decode(genome))
            checkpoint = Path(folder) / f"{index}.safetensors"
            accuracy = [
                evaluator.proxy(arch, RungBudget(e, checkpoint)).val_accuracy for e in rungs
            ]
            final = evaluator.full(arch, Path(folder) / f"full-{index}")
            rows.append({"archid": arch.archid, "rungs": accuracy, "final": final.test_accuracy})
    (out / "kendall.json").write_text(json.dumps({"rungs": list(rungs), "rows": rows}))


def _launch(args: argparse.Namespace, jobs: list[list[str]]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: list[subprocess.Popen] = []
    pending = list(jobs)
    while pending or running:
        while pending and len(running) < args.jobs:
            command = [sys.executable, __file__, *pending.pop(0)]
            running.append(subprocess.Popen(command, env=env))
        time.sleep(1.0)
        for process in list(running):
            if process.poll() is not None:
                running.remove(process)
                if process.returncode:
                    raise SystemExit(f"{process.args} failed with {process.returncode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-budget", type=float, default=600.0, help="CPU seconds a run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        choices=METHODS + EXTRA_METHODS)  # fmt: skip
    parser.add_argument("--rungs", type=int, nargs="+", default=[1, 3, 9])
    parser.add_argument("--kendall", type=int, default=12, help="architectures for tau (0: none)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (1 thread each)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-efficiency"))
    parser.add_argument("--report-only", action="store_true", help="only summarize OUT")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    rungs = tuple(args.rungs)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.run == "kendall":
        return run_kendall(args.kendall, rungs, args.out)
    if args.run:
        return run_one(args.run, args.seed, args.cpu_budget, rungs, args.out)
    if not args.report_only:
        common = ["--cpu-budget", str(args.cpu_budget), "--out", str(args.out), "--rungs"]
        common += [str(r) for r in rungs]
        jobs = (
            [["--run", "kendall", "--kendall", str(args.kendall), *common]] if args.kendall else []
        )
        jobs += [["--run", m, "--seed", str(s), *common] for s in args.seeds for m in args.methods]
        load = os.getloadavg()
        started = time.time()
        _launch(args, jobs)
        meta = {"load_before": load, "load_after": os.getloadavg(), "wall_s": time.time() - started}
        (args.out / "meta.json").write_text(json.dumps(meta))
    from _efficiency_report import report

    report(args.out)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
