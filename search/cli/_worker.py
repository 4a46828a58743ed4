"""`pikenas worker`."""

from __future__ import annotations

from typing import Annotated

import typer

from search.cli import app


@app.command()
def worker(
    storage: Annotated[
        str,
        typer.Option(
            "--storage",
            help="Shared storage: postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB "
            "(or any Optuna storage URL / journal file on one machine).",
        ),
    ],
    config: Annotated[
        str | None,
        typer.Argument(help="Search config YAML (default: the embedded digits search)."),
    ] = None,
    study: Annotated[str, typer.Option("--study", help="Study name.")] = "pikenas",
    trials: Annotated[
        int | None,
        typer.Option("--trials", help="Work until the study holds this many COMPLETE trials."),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Sampler seed; give each worker its own (default: random)."),
    ] = None,
    sampler: Annotated[
        str | None,
        typer.Option("--sampler", help="nsga2, tpe, random, gp or qmc (default: the config's)."),
    ] = None,
    threads: Annotated[
        int, typer.Option("--threads", help="Torch threads of this worker (one per core).")
    ] = 1,
    heartbeat_interval: Annotated[
        float,
        typer.Option("--heartbeat-interval", help="Seconds between heartbeats of a trial."),
    ] = 5.0,
    stale_after: Annotated[
        float,
        typer.Option(
            "--stale-after",
            help="A running trial without heartbeat for this many seconds is failed and retried.",
        ),
    ] = 60.0,
    evaluator: Annotated[
        str,
        typer.Option("--evaluator", hidden=True, help="proxy, or fake[:DELAY_S] for tests."),
    ] = "proxy",
) -> None:
    """Join a shared study and evaluate candidates until it holds N COMPLETE trials.

    Start one worker per core on each machine, all with the same CONFIG, --storage and
    --study. The first creates the study. Trials of a worker that dies are failed by
    heartbeat and retried by the others. Rerunning resumes.
    """
    import optuna

    from search.config import load_config
    from search.remote_worker import run_worker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search_config = load_config(config)
    n_trials = trials if trials is not None else search_config.search.trials
    summary, shared = run_worker(
        search_config,
        storage=storage,
        study_name=study,
        n_trials=n_trials,
        sampler_name=sampler,
        seed=seed,
        evaluator_spec=evaluator,
        threads=threads,
        heartbeat_interval=heartbeat_interval,
        stale_after=stale_after,
    )
    states = [trial.state for trial in shared.get_trials(deepcopy=False)]
    typer.echo(
        f"worker {summary.label}: {summary.complete} complete, {summary.pruned} over budget, "
        f"{summary.failed} failed, {len(summary.recovered)} stale trials recovered; study "
        f"{study!r} holds {states.count(optuna.trial.TrialState.COMPLETE)} COMPLETE trials "
        f"({states.count(optuna.trial.TrialState.RUNNING)} running)"
    )
