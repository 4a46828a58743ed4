"""The PikeLPN claim in small: how much ACE v2 a searched front saves at equal accuracy.

The zoo's uniform baselines on digits (``tiny-w8a8``, ``tiny-w4a4``, ``tiny-binary``) are fully
trained with the search config's ``full:`` budget, ``--seeds`` seeds each; so is every member
of the accuracy / ACE v2 front of a search (a finished run folder ``--run``, or a search run
here with the configuration of ``make demo``). For each baseline the script prints its mean
test accuracy and ACE v2, the cheapest front member whose mean test accuracy is at least that,
its ACE v2 and the ratio. Whatever it measures is printed; no target is asserted.

Run: ``.venv/bin/python benchmarks/seed_claim.py [--run runs/demo] [--seeds 0 1 2] [--jobs 2]
[--out runs/seed-claim]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

BASELINES = ("tiny-w8a8", "tiny-w4a4", "tiny-binary")


def _train(job: tuple[str, str, int, str]) -> tuple[str, int, float]:
    """Full training of one architecture JSON with one seed: ``(key, seed, test accuracy)``."""
    import torch

    from pikenas.evaluators.training.loop import train
    from pikenas.search.config import load_config
    from pikenas.space.arch import ArchConfig

    key, arch_json, seed, folder = job
    torch.set_num_threads(1)
    config = load_config().train_config("full", threads=1, seed=seed)
    result = train(ArchConfig.from_json(arch_json), config, Path(folder))
    return key, seed, float(result.test_accuracy)


def _search(out: Path) -> Path:
    """A search with the configuration of ``make demo`` into ``out/search`` (no full training)."""
    from pikenas.search.config import load_config
    from pikenas.search.pipeline import run_search
    from pikenas.search.spec import RunRequest, WorkerSpec

    config = load_config().with_overrides(full_train_top=0)
    run = out / "search"
    spec = WorkerSpec(
        config=config,
        storage=str(run / "study.log"),
        n_trials=config.search.trials,
        seed=config.search.seed,
        checkpoints=str(run / "checkpoints"),
    )
    run_search(RunRequest(worker=spec, out=run, workers=2), export=False)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished search run folder (default: search)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/seed-claim"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from pikenas.evaluators.cost import count_ace
    from pikenas.evaluators.data.datasets import fit_arch_to_dataset, load_dataset
    from pikenas.results.front import front_table
    from pikenas.results.trials import load, trial_arch
    from pikenas.space.zoo.catalog import get_zoo_arch

    started, load_before = time.time(), os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    run = args.run if args.run is not None else _search(args.out)
    frame = load(run)
    front = front_table(frame[frame["status"] == "ok"])
    splits = load_dataset("digits")
    archs = {
        f"trial-{int(n)}": trial_arch(frame[frame["number"] == n].iloc[0]) for n in front["number"]
    }
    archs.update({name: fit_arch_to_dataset(get_zoo_arch(name), splits) for name in BASELINES})
    jobs = [
        (key, arch.to_json(), seed, str(args.out / "trained" / f"{key}-seed{seed}"))
        for key, arch in archs.items()
        for seed in args.seeds
    ]
    accuracy: dict[str, list[float]] = {}
    with ProcessPoolExecutor(args.jobs) as pool:
        for key, _seed, test in pool.map(_train, jobs):
            accuracy.setdefault(key, []).append(test)
    mean = {key: statistics.mean(values) for key, values in accuracy.items()}
    ace = {key: count_ace(arch).ace_v2 for key, arch in archs.items()}
    members = sorted((key for key in archs if key.startswith("trial-")), key=lambda k: ace[k])
    rows = []
    print(f"front of {run}: {len(members)} members; full budget, seeds {args.seeds}")
    print("\n| baseline | mean test acc | ACE v2 | cheapest front member at least as accurate "
          "| its mean test acc | its ACE v2 | ACE v2 ratio |")  # fmt: skip
    print("|---|---:|---:|---|---:|---:|---:|")
    for name in BASELINES:
        match = next((k for k in members if mean[k] >= mean[name]), None)
        ratio = ace[name] / ace[match] if match else None
        rows.append({"baseline": name, "accuracy": accuracy[name], "ace_v2": ace[name],
                     "member": match, "member_accuracy": accuracy.get(match),
                     "member_ace_v2": ace.get(match), "ratio": ratio})  # fmt: skip
        found = (
            f"{match} | {100 * mean[match]:.2f} % | {ace[match]:,.0f} | {ratio:.2f}x"
            if match
            else "none | - | - | -"
        )
        print(f"| {name} | {100 * mean[name]:.2f} % | {ace[name]:,.0f} | {found} |")
    print("\nfront members (fully trained, mean test accuracy over the seeds):")
    for key in members:
        print(f"  {key}: {100 * mean[key]:.2f} % at ACE v2 {ace[key]:,.0f}")
    print(f"load average {load_before[0]:.2f} -> {os.getloadavg()[0]:.2f}; "
          f"wall {(time.time() - started) / 60:.1f} min")  # fmt: skip
    trained = {k: {"accuracy": accuracy[k], "ace_v2": ace[k]} for k in members}
    summary = {"run": str(run), "seeds": args.seeds, "rows": rows, "members": trained}
    (args.out / "seed_claim.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
