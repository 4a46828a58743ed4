"""`pikenas worker`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import pikenas.search.cli._common as common
from pikenas.search.cli._app import app, echo


@app.command()
def worker(
    storage: Annotated[
        str,
        typer.Option(
            "--storage",
            help="Shared storage: postgresql://USER:PASSWORD@HOST:PORT/DB "
            "(or any Optuna storage URL / journal file on one machine).",
        ),
    ],
    config: common.ConfigArgument = None,
    study: common.StudyOption = "pikenas",
    trials: common.TrialsOption = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Sampler seed; give each worker its own (default: random)."),
    ] = None,
    sampler: common.SamplerOption = None,
    threads: Annotated[
        int, typer.Option("--threads", help="Torch threads of this worker (one per core).")
    ] = 1,
    cost_table: common.CostTableOption = None,
    heartbeat_interval: common.HeartbeatOption = 5.0,
    stale_after: common.StaleAfterOption = 60.0,
    evaluator: common.EvaluatorOption = None,
    checkpoints: Annotated[
        str | None,
        typer.Option(
            "--checkpoints",
            help="Folder of the proxy checkpoints of successive halving (default: "
            "runs/<study>/checkpoints, where 'pikenas search --study' keeps them); share it "
            "between machines to resume a trial anywhere.",
        ),
    ] = None,
) -> None:
    """Join a shared study and evaluate candidates until it holds N COMPLETE trials.

    Start one worker per core on each machine, all with the same CONFIG, --storage, --study
    and --cost-table. The first creates the study. Trials of a worker that dies are failed by
    heartbeat and retried by the others. Rerunning resumes.
    """
    from collections import Counter

    from pikenas.results.storage import open_study
    from pikenas.search.worker import run_worker

    common.check_threads(threads)
    spec = common.worker_spec(
        config,
        storage=storage,
        study=study,
        overrides={
            "trials": trials,
            "sampler": sampler,
            "cost_table": cost_table,
        },
        evaluator=evaluator,
        heartbeat_interval=heartbeat_interval,
        stale_after=stale_after,
        seed=seed,
        threads=threads,
        checkpoints=checkpoints or str(Path("runs") / study.strip() / "checkpoints"),
    )
    report = run_worker(spec)
    states = Counter(t.state.name for t in open_study(spec.storage, spec.study_name).trials)
    echo(
        f"worker {report.label}: {report.complete} complete, {report.stopped} stopped at a "
        f"rung, {report.pruned} over budget, {report.failed} failed, "
        f"{len(report.recovered)} stale trials recovered; study "
        f"{spec.study_name!r} holds {states['COMPLETE']} COMPLETE trials "
        f"({states['RUNNING']} running)"
    )
    if report.gave_up:
        echo(f"pikenas: failed: gave up: {report.gave_up}", err=True)
        raise typer.Exit(1)
