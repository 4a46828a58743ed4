"""`pikenas export`."""

from __future__ import annotations

from typing import Annotated

import typer

from search.cli._app import app, fail


@app.command()
def export(
    run: Annotated[str, typer.Argument(help="Run folder (holds study.log) or storage URL.")],
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
) -> None:
    """Export architectures as bundles: arch.json, weights.safetensors (when fully trained),
    model.onnx (checked in onnxruntime against PyTorch), cost.json (ACE report), README.md.

    Each bundle is a folder OUT/trial-N, written atomically. Load one with
    results.export.load_bundle(FOLDER) or run model.onnx in onnxruntime.
    """
    from results.export import export_pareto, export_trial

    if (trial is None) == (not pareto):
        raise fail("pass exactly one of --trial N and --pareto")
    if pareto:
        bundles = export_pareto(run, out, study)
    else:
        bundles = [export_trial(run, trial, out, study)]
    for bundle in bundles:
        typer.echo(f"exported {bundle}")
