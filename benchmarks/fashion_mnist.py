"""Fashion-MNIST end to end: search, full training of the front and of every zoo baseline
with the same recipe, against the published anchors.

1. ``pikenas search configs/fashion_mnist.yaml`` (NSGA-II, Pareto successive halving, the
   ``fmnist-*`` baselines enqueued) with ``--workers`` processes of one thread, then full
   training of the ``full_train_top`` best front candidates (the pipeline's own step);
2. every baseline of the config trained with the same ``full:`` recipe (same epochs, data,
   optimizer, seed), its ACE v2 counted from its integer program;
3. printed: the fully trained front (test accuracy, ACE v2, ACE v1, parameters, per-layer
   weight/activation bits), each baseline, the cheapest front member with at least the
   baseline's accuracy and the ACE v2 ratio, the published anchors, and the issue's targets
   (met or missed). Writes ``OUT/fashion_mnist.json``.

Budgets: the default is the config as written (60 top-rung trials, proxy 10 % of the images,
rungs 1 and 3 epochs; full training 15 epochs on all 54,000 images), sized for the issue's
2-hour target on 2 cores, which it does not reach today (see the README); ``--budget-minutes``
only states the budget the result is checked against. ``--quick`` is a small honest version
(4 trials, proxy 2 epochs on 10 %, "full" 2 epochs on 25 %, top 2; scored on 1,000
validation / 2,000 test images): its accuracies are far
below a real run's and are printed as such.

Run: ``.venv/bin/python benchmarks/fashion_mnist.py --quick --out runs/bench-fmnist-quick``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "fashion_mnist.yaml"

#: Published test accuracies on Fashion-MNIST (the issue's anchors).
ANCHORS = (
    ("float 2-conv CNN, <100 k parameters", 0.925),
    ("CBCNN, binary weights and activations, 0.48 M parameters", 0.9286),
    ("Google AutoML Vision, 24 compute hours", 0.939),
    ("MobileNet", 0.950),
    ("DENSER (evolved)", 0.953),
)
TARGET_ACCURACY = 0.929  # 4-bit-or-less front member (outside the first and last layer)
TARGET_RATIO = 3.0  # every baseline matched at 3x lower ACE v2
STRETCH_ACCURACY = 0.939


#: ``--quick`` scores on fixed stratified subsets: 1,000 validation and 2,000 test images (the
#: integer-program eval of all 16,000 costs minutes per candidate on a loaded 2-core machine).
QUICK_VAL_FRACTION = 1 / 6
QUICK_TEST_FRACTION = 0.2


def install_quick_splits() -> Any:
    """Put Fashion-MNIST with the quick validation / test subsets into this process's data set
    cache (the key ``load_dataset("fashion_mnist")`` uses), so the search's evaluator, full
    training and the baselines all score on the same subsets. Benchmark-only."""
    import dataclasses

    from pikenas.evaluators.data import datasets
    from pikenas.evaluators.data.datasets import stratified_subset

    key = ("fashion_mnist", "None", None, 0)
    if getattr(datasets._CACHE.get(key), "quick", False):  # installed already: not twice
        return datasets._CACHE[key]
    splits = datasets.load_dataset("fashion_mnist")
    small = dataclasses.replace(
        splits,
        val=stratified_subset(splits.val, QUICK_VAL_FRACTION),
        test=stratified_subset(splits.test, QUICK_TEST_FRACTION),
    )
    object.__setattr__(small, "quick", True)  # a mark on this instance only
    datasets._CACHE[key] = small
    return small


def quick_evaluator(config: Any, threads: int = 1) -> Any:
    """``--evaluator fashion_mnist:quick_evaluator``: the real evaluator on the quick splits."""
    from pikenas.search.objective import ProxyEvaluator

    install_quick_splits()
    return ProxyEvaluator(config, threads)


def derived_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config file's content with the run's overrides (quick mode)."""
    import yaml

    data = yaml.safe_load(CONFIG.read_text())
    if args.quick:
        data["search"].update(trials=4, population_size=4, full_train_top=2)
        data["proxy"].update(data_fraction=0.1, epochs=2)
        data["fidelity"] = None
        data["full"].update(epochs=2, data_fraction=0.25)
    if args.trials is not None:
        data["search"]["trials"] = args.trials
    return data


def run_search(config_path: Path, out: Path, workers: int, quick: bool) -> float:
    """Run the search pipeline (search + full training of the top candidates); wall seconds."""
    command = [
        str(Path(sys.executable).parent / "pikenas"),
        "search",
        str(config_path),
        "--out",
        str(out),
        "--workers",
        str(workers),
        "--no-export",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    if quick:  # the eval uses the quick subsets (see install_quick_splits)
        command += ["--evaluator", "fashion_mnist:quick_evaluator"]
        environment["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")])
        )
    started = time.perf_counter()
    subprocess.run(command, check=True, env=environment)
    return time.perf_counter() - started


def _pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows not dominated in (test accuracy max, ACE v2 min), by ACE v2."""
    front = [
        row
        for row in rows
        if not any(
            other["accuracy"] >= row["accuracy"]
            and other["ace_v2"] <= row["ace_v2"]
            and (other["accuracy"] > row["accuracy"] or other["ace_v2"] < row["ace_v2"])
            for other in rows
        )
    ]
    return sorted(front, key=lambda row: row["ace_v2"])


def low_bit_inside(arch: Any) -> bool:
    """Whether every MAC layer but the first and the last has weights and inputs of <= 4 bits."""
    from pikenas.results.layers import layer_bits

    inner = layer_bits(arch)[1:-1]
    return all(layer.weight_bits <= 4 and layer.activation_bits <= 4 for layer in inner)


def trained_front(run: Path) -> list[dict[str, Any]]:
    """The fully trained trials of the run as rows, their Pareto front marked."""
    from pikenas.results.layers import bits_string
    from pikenas.results.trials import load
    from pikenas.space.arch import ArchConfig

    frame = load(run)
    rows = []
    for _, trial in frame[frame["final_accuracy"].notna()].iterrows():
        arch = ArchConfig.from_json(trial["arch"])
        rows.append(
            {
                "trial": int(trial["number"]),
                "baseline": trial["baseline"] if isinstance(trial["baseline"], str) else "",
                "accuracy": float(trial["final_accuracy"]),
                "proxy_accuracy": float(trial["accuracy"]),
                "ace_v2": float(trial["ace_v2"]),
                "ace_v1": float(trial["ace_v1"]),
                "params": int(trial["params"]),
                "bits": bits_string(arch),
                "low_bit": low_bit_inside(arch),
            }
        )
    front = _pareto(rows)
    for row in rows:
        row["on_front"] = row in front
    return sorted(rows, key=lambda row: row["ace_v2"])


def train_baseline(config: dict[str, Any], name: str, out: Path, quick: bool) -> dict[str, Any]:
    """One baseline fully trained with the config's ``full:`` recipe (one thread, in a worker
    process of its own); its test accuracy and costs."""
    import torch

    from pikenas.evaluators.cost import count_ace
    from pikenas.evaluators.data import load_dataset
    from pikenas.evaluators.data.datasets import fit_arch_to_dataset
    from pikenas.evaluators.training.loop import TrainConfig, train
    from pikenas.results.layers import bits_string
    from pikenas.space.zoo import get_zoo_arch

    torch.set_num_threads(1)
    if quick:
        install_quick_splits()
    splits = load_dataset(config["dataset"]["name"], data_dir=config["dataset"]["data_dir"])
    recipe = TrainConfig.from_dict({**config["full"], "dataset": config["dataset"]["name"]})
    arch = fit_arch_to_dataset(get_zoo_arch(name), splits)
    started = time.perf_counter()
    result = train(arch, recipe, out / name, splits=splits)
    report = count_ace(arch)
    row = {
        "baseline": name,
        "accuracy": result.test_accuracy,
        "ace_v2": report.ace_v2,
        "ace_v1": report.ace_v1,
        "params": report.params,
        "bits": bits_string(arch),
        "low_bit": low_bit_inside(arch),
        "train_s": time.perf_counter() - started,
    }
    print(f"  trained {name}: {row['accuracy']:.2%} in {row['train_s']:.0f} s", flush=True)
    return row


def train_baselines(
    config: dict[str, Any], out: Path, workers: int, quick: bool
) -> list[dict[str, Any]]:
    """Every baseline of the config, ``workers`` at a time (one thread each), in config order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    names = config["baselines"]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context) as pool:
        futures = [pool.submit(train_baseline, config, name, out, quick) for name in names]
        return [future.result() for future in futures]


def matches(front: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per baseline: the cheapest front member with at least its accuracy, and the ratio."""
    found = []
    for baseline in baselines:
        better = [row for row in front if row["accuracy"] >= baseline["accuracy"]]
        member = min(better, key=lambda row: row["ace_v2"]) if better else None
        found.append(
            {
                "baseline": baseline["baseline"],
                "member": member["trial"] if member else None,
                "ratio": baseline["ace_v2"] / member["ace_v2"] if member else None,
            }
        )
    return found


def _count(value: float) -> str:
    return f"{value / 1e6:,.1f} M"


def proxy_tau(run: Path, front: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> Any:
    """Kendall tau of the search's proxy score (the top rung's accuracy) against the full test
    accuracy, over every fully trained architecture: the front members the pipeline trained
    and the baselines (their proxy score from the study, where the search trained them);
    ``(tau, count)``."""
    from scipy.stats import kendalltau

    from pikenas.results.trials import load

    frame = load(run)
    pairs = [(row["proxy_accuracy"], row["accuracy"]) for row in front if not row["baseline"]]
    for row in baselines:
        proxy = frame[(frame["baseline"] == row["baseline"]) & frame["accuracy"].notna()]
        if len(proxy):
            pairs.append((float(proxy["accuracy"].max()), row["accuracy"]))
    if len(pairs) < 3:
        return float("nan"), len(pairs)
    tau = kendalltau([p for p, _ in pairs], [a for _, a in pairs]).statistic
    return float(tau), len(pairs)


def report_text(result: dict[str, Any]) -> str:
    lines = [
        f"Fashion-MNIST benchmark ({result['mode']}): search + full training "
        f"{result['search_s'] / 60:.1f} min, baselines {result['baselines_s'] / 60:.1f} "
        f"min, budget {result['budget_minutes']} min on {result['workers']} worker(s)"
    ]
    lines.append("\nFully trained candidates (* = on the front of test accuracy vs ACE v2):")
    lines.append(
        f"{'':2}{'trial':>6} {'test acc':>9} {'ACE v2':>12} {'ACE v1':>12} "
        f"{'params':>8}  bits (weight/activation per MAC layer)"
    )
    for row in result["front"]:
        mark = "*" if row["on_front"] else " "
        label = f"{row['trial']}" + (f" ({row['baseline']})" if row["baseline"] else "")
        lines.append(
            f"{mark:2}{label:>6} {row['accuracy']:>9.2%} {_count(row['ace_v2']):>12} "
            f"{_count(row['ace_v1']):>12} {row['params']:>8,}  {row['bits']}"
        )
    lines.append("\nZoo baselines, same full-training recipe:")
    for row, match in zip(result["baselines"], result["matches"], strict=True):
        if match["member"] is None:
            versus = "no front member reaches it"
        elif match["ratio"] >= 1:
            versus = (
                f"front trial {match['member']} matches it at {match['ratio']:.2f}x lower ACE v2"
            )
        else:
            versus = (
                f"the cheapest front member reaching it (trial {match['member']}) costs "
                f"{1 / match['ratio']:.2f}x more ACE v2"
            )
        lines.append(
            f"  {row['baseline']:<15} {row['accuracy']:>7.2%} ACE v2 "
            f"{_count(row['ace_v2']):>11} ACE v1 {_count(row['ace_v1']):>11} "
            f"params {row['params']:>7,}  bits {row['bits']}  -> {versus}"
        )
    tau, count = result.get("proxy_tau", (float("nan"), 0))
    lines.append(
        f"\nKendall tau, proxy score (top rung) vs full test accuracy, {count} fully trained "
        f"architectures (front + baselines): {tau:+.3f}"
    )
    lines.append("\nPublished anchors (test accuracy):")
    lines += [f"  {name:<58} {accuracy:.2%}" for name, accuracy in ANCHORS]
    lines.append("\nTargets:")
    for text, met in result["targets"].items():
        lines.append(f"  [{'met' if met else 'MISSED'}] {text}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small version (minutes)")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=120.0,
        help="the CPU wall budget the run is checked against",
    )
    parser.add_argument("--trials", type=int, default=None, help="override search.trials")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-fmnist")
    args = parser.parse_args(argv)
    import yaml

    args.out.mkdir(parents=True, exist_ok=True)
    config = derived_config(args)
    config_path = args.out / "config.yaml"
    # Quick: the baselines are not enqueued in the search (only trained apart, step 2).
    search_config = {**config, "baselines": [] if args.quick else config["baselines"]}
    config_path.write_text(yaml.safe_dump(search_config, sort_keys=False))
    print(
        f"search: {config_path} (trials {config['search']['trials']}, proxy "
        f"{config['proxy']}, fidelity {config.get('fidelity')}, full {config['full']})",
        flush=True,
    )
    search_s = run_search(config_path, args.out / "search", args.workers, args.quick)
    started = time.perf_counter()
    baselines = train_baselines(config, args.out / "baselines", args.workers, args.quick)
    baselines_s = time.perf_counter() - started
    rows = trained_front(args.out / "search")
    front = [row for row in rows if row["on_front"]]
    found = matches(front, baselines)
    # A quick run (or a resumed one) is not the target's run: its time says nothing of it.
    within = (search_s + baselines_s) / 60 <= args.budget_minutes and not args.quick
    best_low_bit = max((row["accuracy"] for row in front if row["low_bit"]), default=0.0)
    targets = {
        f"search + full training within {args.budget_minutes:.0f} min "
        f"({(search_s + baselines_s) / 60:.1f} min)": within,
        f"a <=4-bit front member (inside) at >= {TARGET_ACCURACY:.1%} "
        f"(best {best_low_bit:.2%})": best_low_bit >= TARGET_ACCURACY,
        f"every baseline matched at >= {TARGET_RATIO:.0f}x lower ACE v2": all(
            match["ratio"] is not None and match["ratio"] >= TARGET_RATIO for match in found
        ),
        f"stretch: {STRETCH_ACCURACY:.1%} with no float MAC layer": any(
            row["accuracy"] >= STRETCH_ACCURACY and "32" not in row["bits"] for row in front
        ),
    }
    result = {
        "mode": "quick" if args.quick else "full",
        "budget_minutes": args.budget_minutes,
        "workers": args.workers,
        "search_s": search_s,
        "baselines_s": baselines_s,
        "config": config,
        "front": rows,
        "baselines": baselines,
        "matches": found,
        "proxy_tau": proxy_tau(args.out / "search", rows, baselines),
        "anchors": dict(ANCHORS),
        "targets": targets,
    }
    print(report_text(result))
    (args.out / "fashion_mnist.json").write_text(
        json.dumps(
            result,
            indent=2,
            default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else str(v),
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
