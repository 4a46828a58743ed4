"""`pikenas export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pikenas.search.cli._app import app, echo, fail


@app.command()
def export(
    run: Annotated[
        str,
        typer.Argument(
            help="Run folder (holds study.log), storage URL, or a 'pikenas train' folder "
            "(arch.json + weights.safetensors: bundled as FOLDER-bundle)."
        ),
    ],
    trial: Annotated[
        int | None, typer.Option("--trial", min=0, help="Export this trial number.")
    ] = None,
    pareto: Annotated[
        bool, typer.Option("--pareto", help="Export every architecture on the Pareto front.")
    ] = False,
    out: Annotated[
        str | None,
        typer.Option("--out", help="Folder for the trial-N bundles (default: RUN/exports)."),
    ] = None,
    study: Annotated[
        str | None, typer.Option("--study", help="Study name (default: the only one).")
    ] = None,
    formats: Annotated[
        list[str] | None,
        typer.Option(
            "--format",
            help="Formats to write: onnx (model.onnx), qonnx (model.qonnx.onnx, for FINN / "
            "qonnx), hls4ml (an hls4ml project compiled for C simulation and checked bit for "
            "bit against the program; needs hls4ml and g++); repeat the option for several "
            "(default: onnx and qonnx).",
        ),
    ] = None,
) -> None:
    """Export architectures as bundles: arch.json, weights.safetensors (when fully trained),
    the integer program, model.onnx (checked in onnxruntime against the program),
    model.qonnx.onnx (QONNX, checked by pikenas ace and, when installed, qonnx), with --format
    hls4ml an hls4ml project (hls4ml/, C simulation compared with the program; an operation that
    does not map is named, with why, in one line), cost.json (ACE report), README.md. Nothing is
    written unless every check of pikenas verify passes.

    Each bundle is a folder OUT/trial-N, written atomically. Load one with
    results.export.load_bundle(FOLDER) or run model.onnx in onnxruntime.
    """
    from pikenas.results.export.bundle import (
        DEFAULT_FORMATS,
        FORMATS,
        BundleError,
        export_pareto,
        export_trained,
        export_trial,
    )

    trained = _is_train_folder(run)
    if trained and (trial is not None or pareto):
        raise fail(f"{run} is a 'pikenas train' folder (one architecture): drop --trial/--pareto")
    if not trained and (trial is None) == (not pareto):
        raise fail("pass exactly one of --trial N and --pareto")
    chosen = tuple(formats) if formats else DEFAULT_FORMATS
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise fail(f"--format {unknown[0]!r} is not known; use {' or '.join(FORMATS)}")
    try:
        if trained:
            bundles = [export_trained(run, out, formats=chosen)]
        elif pareto:
            bundles = export_pareto(run, out, study, formats=chosen)
        else:
            bundles = [export_trial(run, trial, out, study, formats=chosen)]
    except BundleError as exc:
        for bundle in exc.written:
            echo(f"exported {bundle}")
        for number, reason in exc.failures:
            echo(f"pikenas: failed: export of trial {number}: {reason}", err=True)
        raise typer.Exit(1) from None
    for bundle in bundles:
        echo(f"exported {bundle}")
        check = Path(bundle) / "hls4ml" / "check.json"
        if check.is_file():
            echo(f"  hls4ml: {json.loads(check.read_text(encoding='utf-8'))['summary']}")


def _is_train_folder(run: str) -> bool:
    """A ``pikenas train`` output folder: an ``arch.json`` and no study beside it."""
    folder = Path(run).expanduser()
    return (folder / "arch.json").is_file() and not (folder / "study.log").exists()
