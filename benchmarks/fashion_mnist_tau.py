"""Kendall tau of each proxy rung against full training on Fashion-MNIST.

Samples ``--archs`` random architectures of ``configs/fashion_mnist.yaml``'s space (uniform
over every gene, seeded), trains each rung by rung (``--rungs`` epochs on ``--proxy-fraction``
of the training images; the validation accuracy of each rung as the search measures it), then
fully (``--full-epochs`` on ``--full-fraction``; test accuracy), and prints Kendall's tau
between every rung's accuracy and the full test accuracy, with each architecture's figures.
One torch thread per job; ``--jobs`` processes. Writes ``OUT/tau.json``.

Run (what the config's fidelities were chosen from; hours on 2 cores):
``.venv/bin/python benchmarks/fashion_mnist_tau.py --archs 12 --rungs 1 3 --proxy-fraction 0.1
--full-epochs 15 --jobs 2 --out runs/bench-fmnist-tau``. ``--quick`` runs a small honest
version (10 archs, rungs 1 and 2 on 5 %, "full" = 2 epochs on 15 %, scored on the quick
1,000 validation / 2,000 test subsets of ``benchmarks/fashion_mnist.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "fashion_mnist.yaml"


def sample_archs(count: int, seed: int) -> list[Any]:
    """``count`` distinct random architectures of the Fashion-MNIST space (uniform genes)."""
    import numpy as np

    from pikenas.search.config import load_config

    space = load_config(CONFIG, check_references=False).space
    genes = space.distributions()
    rng = np.random.default_rng(seed)
    archs: dict[str, Any] = {}
    while len(archs) < count:
        params = {name: choices[int(rng.integers(len(choices)))] for name, choices in genes.items()}
        arch = space.decode(params, name=f"random-{len(archs)}")
        if not arch.dead_ends():
            archs.setdefault(arch.archid, arch)
    return list(archs.values())


def measure(
    arch_json: str,
    rungs: list[int],
    proxy_fraction: float,
    full_epochs: int,
    full_fraction: float,
    quick: bool = False,
) -> dict[str, Any]:
    """Rung accuracies (validation, as the search sees them) and the full test accuracy."""
    import torch

    if quick:  # score on the benchmark's quick validation / test subsets
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from fashion_mnist import install_quick_splits

        install_quick_splits()

    from pikenas.evaluators.cost import count_ace
    from pikenas.evaluators.training.loop import TrainConfig, evaluate
    from pikenas.space.arch import ArchConfig

    torch.set_num_threads(1)
    arch = ArchConfig.from_json(arch_json)
    started = time.perf_counter()
    proxy = TrainConfig(dataset="fashion_mnist", epochs=max(rungs), data_fraction=proxy_fraction)
    rung_accuracy = {}
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "rungs.safetensors"
        for epoch in rungs:
            result = evaluate(arch, proxy, until_epoch=epoch, checkpoint=checkpoint)
            rung_accuracy[str(epoch)] = result.val_accuracy
    proxy_s = time.perf_counter() - started
    full = TrainConfig(dataset="fashion_mnist", epochs=full_epochs, data_fraction=full_fraction)
    final = evaluate(arch, full)
    return {
        "name": arch.name,
        "archid": arch.archid,
        "ace_v2": count_ace(arch).ace_v2,
        "rungs": rung_accuracy,
        "full_test_accuracy": final.test_accuracy,
        "proxy_s": proxy_s,
        "full_s": time.perf_counter() - started - proxy_s,
    }


def kendall_tau(first: list[float], second: list[float]) -> float:
    from scipy.stats import kendalltau

    tau = kendalltau(first, second).statistic
    return float(tau) if tau is not None and math.isfinite(tau) else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", type=int, default=12)
    parser.add_argument("--rungs", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--proxy-fraction", type=float, default=0.1)
    parser.add_argument("--full-epochs", type=int, default=15)
    parser.add_argument("--full-fraction", type=float, default=1.0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10 archs, rungs 1 2 on 5 %%, 'full' = 2 epochs on 15 %%, quick eval subsets",
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-fmnist-tau")
    args = parser.parse_args(argv)
    if args.quick:
        args.archs, args.rungs, args.proxy_fraction = 10, [1, 2], 0.05
        args.full_epochs, args.full_fraction = 2, 0.15
    rungs = sorted(set(args.rungs))
    archs = sample_archs(args.archs, args.seed)
    print(
        f"{len(archs)} random architectures of {CONFIG.name}; rungs {rungs} epochs on "
        f"{args.proxy_fraction:.0%} of the training images; full: {args.full_epochs} epochs on "
        f"{args.full_fraction:.0%}; {args.jobs} job(s) of one thread",
        flush=True,
    )
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(
                measure,
                arch.to_json(),
                rungs,
                args.proxy_fraction,
                args.full_epochs,
                args.full_fraction,
                args.quick,
            )
            for arch in archs
        ]
        rows = []
        for future in futures:
            row = future.result()
            rows.append(row)
            args.out.mkdir(parents=True, exist_ok=True)  # partial results survive a stop
            (args.out / "rows.json").write_text(json.dumps(rows, indent=2) + "\n")
            rung_text = " ".join(f"r{k}={v:.3f}" for k, v in row["rungs"].items())
            print(
                f"  {row['archid']}  ACE v2 {row['ace_v2']:.3g}  {rung_text}  full "
                f"{row['full_test_accuracy']:.4f}  ({row['proxy_s']:.0f} s + "
                f"{row['full_s']:.0f} s)",
                flush=True,
            )
    full = [row["full_test_accuracy"] for row in rows]
    taus = {str(r): kendall_tau([row["rungs"][str(r)] for row in rows], full) for r in rungs}
    for rung, tau in taus.items():
        print(f"Kendall tau, rung {rung} epoch(s) vs full: {tau:+.3f}")
    print(f"wall time {time.perf_counter() - started:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
        "tau": taus,
    }
    (args.out / "tau.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
