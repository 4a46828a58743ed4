"""`pikenas search`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from search.cli import app

if TYPE_CHECKING:
    from search.backends import RunRequest
    from search.pipeline import RunResult


def _build_request(
    config_path: str | None,
    *,
    trials: int | None,
    workers: int,
    sampler: str | None,
    seed: int | None,
    study: str,
    out: str | None,
    storage: str | None,
    full_train_top: int | None,
    population_size: int | None,
    max_ace: float | None,
    backend: str,
    evaluator: str,
    heartbeat_interval: float,
    stale_after: float,
    ray: dict[str, Any] | None = None,
) -> RunRequest:
    """Validate every input and build the run request; creates nothing (errors exit 2)."""
    from results.storage import is_url
    from search._ray_backend import ray_options
    from search.backends import BACKENDS, RunRequest
    from search.config import load_config
    from search.objective import EVALUATORS
    from space.errors import SearchConfigError

    if workers < 1:
        raise SearchConfigError(f"--workers must be at least 1 (got {workers})")
    if not study.strip():
        raise SearchConfigError("--study must be a non-empty name")
    BACKENDS.get(backend)  # unknown names list the valid ones
    options = ray_options(backend, **(ray or {}))
    EVALUATORS.get(evaluator.partition(":")[0])
    if heartbeat_interval <= 0 or stale_after <= 2 * heartbeat_interval:
        raise SearchConfigError(
            f"--stale-after ({stale_after} s) must exceed twice --heartbeat-interval "
            f"({heartbeat_interval} s)"
        )
    if storage is not None and not (is_url(storage) or storage.endswith(".log")):
        raise SearchConfigError(
            f"--storage {storage!r} is neither a storage URL (sqlite:///..., "
            "postgresql://..., journal:///...) nor a journal file ending in .log"
        )
    config = load_config(config_path).with_overrides(
        trials=trials,
        sampler=sampler,
        seed=seed,
        full_train_top=full_train_top,
        population_size=population_size,
        max_ace=max_ace,
    )
    run_dir = Path(out if out is not None else Path("runs") / study).expanduser().resolve()
    if run_dir.exists() and not run_dir.is_dir():
        raise SearchConfigError(f"--out {run_dir} is a file; give a folder for the run")
    return RunRequest(
        config=config,
        out=run_dir,
        study_name=study,
        storage=storage,
        workers=workers,
        backend=backend,
        evaluator=evaluator,
        heartbeat_interval=heartbeat_interval,
        stale_after=stale_after,
        options=options,
    )


def _run_with_display(request: RunRequest, export: bool) -> RunResult:
    """Run the search under a live rich display (trials done / N, front, best values)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from search.pipeline import run_search

    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as display:
        task = display.add_task("trials", total=request.n_trials, status="starting workers")

        def on_progress(snap: object) -> None:
            from search.progress import Snapshot

            assert isinstance(snap, Snapshot)
            status = (
                f"front {snap.front_size} | best acc {snap.best_accuracy:.4f} | "
                f"lowest ACE v2 {snap.lowest_ace_v2:.4g} | {snap.running} running, "
                f"{snap.pruned} over budget, {snap.failed} failed"
            )
            display.update(task, completed=min(snap.complete, request.n_trials), status=status)

        def on_phase(text: str) -> None:
            display.console.log(text)

        return run_search(request, progress=on_progress, on_phase=on_phase, export=export)


def _report(request: RunRequest, result: RunResult) -> None:
    from search.progress import snapshot

    snap = snapshot(result.study, request.n_trials)
    from results.storage import display_name

    where = display_name(request.storage) if request.storage else str(request.out / "study.log")
    typer.echo(
        f"study {request.study_name!r}: {snap.complete} COMPLETE trials "
        f"({snap.pruned} over budget, {snap.failed} failed) in {where}"
    )
    typer.echo(
        f"front: {snap.front_size} candidates; best proxy accuracy {snap.best_accuracy:.4f}; "
        f"lowest ACE v2 {snap.lowest_ace_v2:.6g}"
    )
    if result.final is not None and result.final.results:
        for item in result.final.results:
            typer.echo(
                f"  trial {item.number}: proxy {item.proxy_accuracy:.4f} -> final "
                f"{item.final_accuracy:.4f} (ACE v2 {item.ace_v2:.6g}) in {item.final_dir}"
            )
        tau = result.final.kendall_tau
        typer.echo(
            "Kendall tau (proxy vs final accuracy): "
            + (f"{tau:.3f}" if tau is not None else "undefined (fewer than 2 distinct values)")
        )
    typer.echo(f"run folder: {request.out} (front.csv, dashboard.html, exports/)")


@app.command()
def search(
    config: Annotated[
        str | None,
        typer.Argument(help="Search config YAML (default: the embedded digits search)."),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option("--trials", help="COMPLETE trials the study must hold (default: config)."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", help="Worker processes (torch threads: cores // N).")
    ] = 2,
    sampler: Annotated[
        str | None,
        typer.Option("--sampler", help="nsga2, tpe, random, gp or qmc (default: config)."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampler seed.")] = None,
    study: Annotated[str, typer.Option("--study", help="Study name.")] = "pikenas",
    out: Annotated[
        str | None, typer.Option("--out", help="Run folder (default: runs/<study>).")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="Optuna storage URL (default: journal OUT/study.log)."),
    ] = None,
    full_train_top: Annotated[
        int | None,
        typer.Option("--full-train-top", help="Fully train the K best front candidates."),
    ] = None,
    population_size: Annotated[
        int | None, typer.Option("--population-size", help="NSGA-II population size.")
    ] = None,
    max_ace: Annotated[
        float | None,
        typer.Option("--max-ace", help="ACE v2 budget: candidates above it are not trained."),
    ] = None,
    backend: Annotated[
        str,
        typer.Option("--backend", help="Where trials run: local (worker processes) or ray."),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray: join this cluster (HOST:PORT of 'ray start --head')."),
    ] = None,
    cpus_per_trial: Annotated[
        int | None,
        typer.Option("--cpus-per-trial", help="Ray: CPUs (torch threads) per trial."),
    ] = None,
    gpus_per_trial: Annotated[
        float | None, typer.Option("--gpus-per-trial", help="Ray: GPUs per trial (0.5: share).")
    ] = None,
    evaluator: Annotated[
        str,
        typer.Option("--evaluator", hidden=True, help="proxy, or fake[:DELAY_S] for tests."),
    ] = "proxy",
    heartbeat_interval: Annotated[
        float, typer.Option("--heartbeat-interval", hidden=True, help="Seconds between beats.")
    ] = 5.0,
    stale_after: Annotated[
        float,
        typer.Option("--stale-after", hidden=True, help="Fail running trials silent this long."),
    ] = 60.0,
    export: Annotated[
        bool, typer.Option("--export/--no-export", help="Export the front's bundles at the end.")
    ] = True,
) -> None:
    """Search PikeLPN architectures for accuracy and ACE v2; resumable.

    Rerunning the same command continues until the study holds --trials COMPLETE trials
    (trials of a killed run are failed and retried). Then the --full-train-top best front
    candidates are trained fully, and OUT gets front.csv, dashboard.html and exports/.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    request = _build_request(
        config,
        trials=trials,
        workers=workers,
        sampler=sampler,
        seed=seed,
        study=study,
        out=out,
        storage=storage,
        full_train_top=full_train_top,
        population_size=population_size,
        max_ace=max_ace,
        backend=backend,
        evaluator=evaluator,
        heartbeat_interval=heartbeat_interval,
        stale_after=stale_after,
        ray={
            "address": address,
            "cpus_per_trial": cpus_per_trial,
            "gpus_per_trial": gpus_per_trial,
        },
    )
    result = _run_with_display(request, export)
    _report(request, result)
