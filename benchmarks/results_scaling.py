"""How the results tools scale with the number of trials (2-core CPU figures in the report).

Run: ``.venv/bin/python benchmarks/results_scaling.py [--trials 2000]``. Builds a journal-file
study of random tiny-architecture trials in a temp folder, then times ``results.load``, the
Pareto front, the hypervolume history, the dashboard data + HTML, and ``pareto_mask`` on 10^6
random points. Prints one line per measurement.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from pikenas.results.dashboard import dashboard_data, render_html
from pikenas.results.front import front_table
from pikenas.results.pareto import hypervolume_history, pareto_mask
from pikenas.results.storage import open_storage
from pikenas.results.trials import load
from pikenas.space.arch import ArchConfig, ConvQuantSpec, ConvStemSpec, PikeBlockSpec


def _arch(rng: random.Random) -> ArchConfig:
    blocks = []
    for _ in range(rng.randint(2, 5)):
        bits = rng.choice([2, 4, 8])
        blocks.append(
            PikeBlockSpec(
                out_channels=16,
                depthwise=ConvQuantSpec(weight_bits=bits),
                pointwise=ConvQuantSpec(weight_bits=bits),
                activation_bits=rng.choice([2, 4, 8]),
            )
        )
    return ArchConfig(
        input_channels=1,
        resolution=8,
        num_classes=10,
        stem=ConvStemSpec(out_channels=16, stride=1),
        blocks=tuple(blocks),
    )


def _timed(label: str, function, *args, **kwargs):  # noqa: ANN001, ANN202
    start = time.perf_counter()
    result = function(*args, **kwargs)
    print(f"{label}: {time.perf_counter() - start:.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        storage = open_storage(Path(folder), create=True)
        study = optuna.create_study(
            study_name="bench", storage=storage, directions=["maximize", "minimize"]
        )
        start = time.perf_counter()
        for _ in range(args.trials):
            arch = _arch(rng)
            trial = optuna.trial.create_trial(
                values=[rng.random(), rng.uniform(1e5, 1e7)],
                user_attrs={
                    "arch": arch.to_json(indent=None),
                    "archid": arch.archid,
                    "ace_v1": 1.0,
                    "elementwise_share": rng.random(),
                    "status": "ok",
                },
            )
            study.add_trial(trial)
        print(f"write {args.trials} trials (journal): {time.perf_counter() - start:.3f} s")
        frame = _timed(f"results.load ({args.trials} trials)", load, Path(folder))
        front = _timed("front_table", front_table, frame)
        print(f"front size: {len(front)}")
        _timed("hypervolume_history", hypervolume_history, frame)
        data = _timed("dashboard_data (no ACE breakdowns)", dashboard_data, study, breakdowns=False)
        page = _timed("render_html", render_html, data)
        print(f"dashboard size: {len(page) / 1e6:.1f} MB")
    points = np.random.default_rng(0).random((1_000_000, 2))
    _timed("pareto_mask on 10^6 points", pareto_mask, points[:, 0], points[:, 1])


if __name__ == "__main__":
    main()
