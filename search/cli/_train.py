"""`pikenas train`: full quantization-aware training of one network, resumable."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from pikenas.search.cli._app import app, echo, fail
from pikenas.search.cli._common import resolve_arch


@app.command()
def train(
    target: Annotated[
        str,
        typer.Argument(
            metavar="NAME_OR_ARCH_JSON",
            help="A zoo name (see 'pikenas zoo') or the path of an ArchConfig JSON file.",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Run folder: arch.json, config.json, checkpoint.safetensors, then "
            "weights.safetensors and metrics.json. Rerunning on it resumes.",
        ),
    ],
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            help="digits, synthetic, fashion_mnist, mnist, idx, cifar10, cifar100 or imagefolder.",
        ),
    ] = "digits",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Folder of the data set's files (IDX sets, cifar10/100, imagefolder).",
        ),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = 30,
    seed: Annotated[int, typer.Option("--seed", help="Seed of weights and data order.")] = 0,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Images per step (default 128).")
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", min=0.0, help="Peak learning rate (default 4e-3).")
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option("--optimizer", help="adamw (default) or sgd.")
    ] = None,
    resolution: Annotated[
        int | None,
        typer.Option("--resolution", min=1, help="Resize images to this size (default: native)."),
    ] = None,
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="Torch CPU threads (at most the cores).")
    ] = 1,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    compile_quantizers: Annotated[
        str,
        typer.Option(
            "--compile",
            help="Compiled activation quantizers: auto (schedules of >= 2,000 steps), on, off.",
        ),
    ] = "auto",
    distill_from: Annotated[
        str | None,
        typer.Option(
            "--distill-from",
            help="Float teacher: a 'pikenas train' folder or a zoo name (trained first).",
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="Progress bar (default: when on a terminal)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print metrics.json instead of a summary.")
    ] = False,
) -> None:
    """Train one network on a data set with quantization-aware training.

    The architecture is fitted to the data set's input (channels, resolution, classes); a
    model whose strides cannot take that input is refused. A checkpoint is written after
    every epoch: rerun the same command after an interruption (even kill -9) and it continues
    from the last finished epoch, ending with the same weights as an uninterrupted run (CPU).
    A finished folder just prints its metrics again.
    """
    from pikenas.evaluators.data.datasets import DATASETS
    from pikenas.search.cli._common import check_threads
    from pikenas.space.errors import PikeNASError, RuntimeFailureError

    check_threads(threads)
    if dataset not in DATASETS:
        raise fail(f"unknown data set {dataset!r}; choose one of: {', '.join(sorted(DATASETS))}")
    if data_dir is not None and not data_dir.is_dir():
        raise fail(f"--data-dir {data_dir} is not a folder; pass the folder holding the data set")
    options: dict[str, Any] = {
        "dataset": dataset,
        "data_dir": str(data_dir.resolve()) if data_dir is not None else None,
        "epochs": epochs,
        "seed": seed,
        "threads": threads,
        "device": device,
        "compile": compile_quantizers,
        "resolution": resolution,
    }
    optional = {"batch_size": batch_size, "lr": lr, "optimizer": optimizer}
    options.update({name: value for name, value in optional.items() if value is not None})
    if distill_from is not None:
        options["distill_from"] = distill_from
    show_progress = sys.stderr.isatty() if progress is None else progress
    try:
        from pikenas.evaluators.training.loop import TrainConfig
        from pikenas.evaluators.training.loop import train as train_arch

        config = TrainConfig.from_dict(options)
        arch = resolve_arch(target)
        result = train_arch(arch, config, out, progress=show_progress)
    except RuntimeFailureError as exc:
        echo(f"pikenas: failed: {' '.join(str(exc).split())}", err=True)
        raise typer.Exit(1) from None
    except PikeNASError as exc:
        raise fail(str(exc)) from None
    if as_json:
        echo((out / "metrics.json").read_text().rstrip())
        return
    metrics = json.loads((out / "metrics.json").read_text())
    echo(
        f"{metrics['name'] or target} on {dataset}: test accuracy "
        f"{100 * result.test_accuracy:.2f} %, validation {100 * result.val_accuracy:.2f} %, "
        f"test loss {result.test_loss:.4f}"
    )
    echo(
        f"{result.epochs} epochs in {result.wall_s:.1f} s ({result.images_per_s:.0f} "
        f"training images/s); wrote {out}/arch.json, weights.safetensors, metrics.json"
    )
