"""`pikenas search`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

import pikenas.search.cli._common as common
from pikenas.search.cli._app import app, echo

if TYPE_CHECKING:
    from pikenas.results.storage import StorageTarget
    from pikenas.search.pipeline import RunResult
    from pikenas.search.spec import RunRequest


def _ray_placement(backend: str, **given: object) -> dict[str, object]:
    """The Ray options, refused with another backend rather than silently ignored."""
    from pikenas.space.errors import SearchConfigError

    named = [f"--{key.replace('_', '-')}" for key, value in given.items() if value is not None]
    if backend != "ray" and named:
        raise SearchConfigError(
            f"{', '.join(named)} apply to --backend ray only; add --backend ray or drop them"
        )
    address = given.get("address")
    if isinstance(address, str) and not address.strip():
        raise SearchConfigError("--address must be HOST:PORT of a Ray head (ray start --head)")
    return {key: value for key, value in given.items() if value is not None}


def _check_run_folder(run_dir: Path) -> None:
    """Refuse a run folder that is a file or a link, or whose nearest existing folder is not
    writable (nothing is created yet)."""
    import os

    from pikenas.evaluators._atomic import check_target
    from pikenas.space.errors import SearchConfigError

    if run_dir.exists() and not run_dir.is_dir():
        raise SearchConfigError(f"--out {run_dir} is a file; give a folder for the run")
    check_target(run_dir, folder=True)
    existing = run_dir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise SearchConfigError(
            f"--out {run_dir}: cannot create or write it ({existing} is not a writable "
            "folder); choose another --out"
        )


def _storage_option(storage: str, run_dir: Path) -> StorageTarget:
    """``--storage`` parsed (once, carried typed from here); an explicit file storage outside
    the run folder must be writable where it is."""
    from pikenas.results.storage import check_storage_file, parse_storage
    from pikenas.space.errors import PikeNASError, SearchConfigError

    try:
        target = parse_storage(storage, folders=False)
        if target.path is not None and not target.path.is_relative_to(run_dir):
            check_storage_file(target)
    except PikeNASError as exc:
        raise SearchConfigError(f"--storage {exc}") from None
    return target


def _build_request(
    config_path: str | None,
    *,
    out: str | None,
    study: str,
    storage: str | None,
    workers: int | None,
    backend: str,
    ray: dict[str, object],
    evaluator: str | None,
    heartbeat_interval: float,
    stale_after: float,
    overrides: dict[str, object],
) -> RunRequest:
    """Validate every input and build the run request; creates nothing (errors exit 2).
    ``overrides`` are the config's command-line settings (trials, seed, sampler, ...)."""
    from pydantic import ValidationError

    from pikenas.search.spec import BACKENDS, RunRequest, available_cores, check_study_name
    from pikenas.space._strict import one_line
    from pikenas.space.errors import RunDirError, SearchConfigError

    if backend not in BACKENDS:
        raise SearchConfigError(
            f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}"
        )
    placement = _ray_placement(backend, **ray)
    cores = available_cores()
    if workers is None:
        workers = min(2, cores)
    elif backend == "local" and workers > cores:
        raise SearchConfigError(
            f"--workers {workers}: this machine lets pikenas use {cores} cores and each local "
            f"worker is a process with at least one torch thread; give at most {cores} (or "
            "--backend ray --address HOST:PORT for a cluster)"
        )
    try:
        check_study_name(study.strip())
    except ValueError as exc:
        raise SearchConfigError(f"--study: {exc}") from None
    run_dir = Path(out if out is not None else Path("runs") / study).expanduser().resolve()
    _check_run_folder(run_dir)
    from pikenas.results.storage import JOURNAL_NAME

    given = storage if storage is not None else str(run_dir / JOURNAL_NAME)
    target = _storage_option(given, run_dir)
    try:
        spec = common.worker_spec(
            config_path,
            storage=target,
            study=study,
            overrides=overrides,
            evaluator=evaluator,
            heartbeat_interval=heartbeat_interval,
            stale_after=stale_after,
            checkpoints=str(run_dir / "checkpoints"),
        )
    except RunDirError as exc:
        raise SearchConfigError(f"--storage {exc}") from None
    spec = spec.model_copy(update={"seed": spec.config.search.seed})
    try:
        return RunRequest(worker=spec, out=run_dir, workers=workers, backend=backend, ray=placement)
    except ValidationError as exc:
        field, _, rest = one_line(exc).partition(":")
        raise SearchConfigError(f"--{field.split('.')[-1].replace('_', '-')}:{rest}") from None


def _run_with_display(request: RunRequest, export: bool) -> RunResult:
    """Run the search under the progress display of :mod:`search.progress`."""
    from pikenas.search.cli._app import OUTPUT
    from pikenas.search.pipeline import prepare_run, run_search
    from pikenas.search.progress import ProgressDisplay, WorkPlan

    study = prepare_run(request)  # a storage that cannot be opened fails before the display
    plan = WorkPlan.for_search(request.n_trials, request.config.fidelity)
    with ProgressDisplay(plan, quiet=OUTPUT.quiet) as display:
        return run_search(
            request, progress=display.update, on_phase=display.phase, export=export, study=study
        )


def _report(request: RunRequest, result: RunResult, export: bool = True) -> None:
    from pikenas.results.storage import display_name
    from pikenas.results.trials import study_info
    from pikenas.search.progress import snapshot

    snap = snapshot(result.study, request.n_trials)
    echo(
        f"study {request.worker.study_name!r}: {snap.complete} COMPLETE trials "
        f"({snap.stopped} stopped at a rung, {snap.pruned} over budget, {snap.failed} failed) in "
        f"{display_name(request.worker.storage)}"
    )
    from pikenas.space._text import inline

    info = study_info(result.study)
    echo(
        f"front: {snap.front_size} candidates; best proxy accuracy {snap.best_accuracy:.4f}; "
        f"lowest ACE v2 {snap.lowest_ace_v2:.6g} {inline(info['cost_unit'])} "
        f"(cost table {inline(info['cost_table'])})"
    )
    if result.final is not None and result.final.winners:
        for winner in result.final.winners:
            echo(
                f"  trial {winner.number}: proxy {winner.proxy_accuracy:.4f} -> final "
                f"{winner.result.final_accuracy:.4f} (ACE v2 {winner.ace_v2:.6g}) in "
                f"{request.out / winner.result.final_dir}"
            )
        tau = result.final.kendall_tau
        echo(
            "Kendall tau (proxy vs final accuracy): "
            + (f"{tau:.3f}" if tau is not None else "undefined (fewer than 2 distinct values)")
        )
    if result.export_error is None:
        outputs = "front.csv, dashboard.html, exports/" if export else "front.csv, dashboard.html"
        echo(f"run folder: {request.out} ({outputs})")
        return
    error = result.export_error
    echo(
        f"run folder: {request.out} (front.csv, dashboard.html; exports/ holds "
        f"{len(error.written)} of {len(error.written) + len(error.failures)} bundles)"
    )
    for number, reason in error.failures:
        echo(f"pikenas: failed: export of trial {number}: {reason}", err=True)
    echo(
        f"pikenas: failed: {len(error.failures)} front bundle(s) could not be exported; every "
        f"other output is written; retry them with 'pikenas export {request.out} --trial N'",
        err=True,
    )
    raise typer.Exit(1)


@app.command()
def search(
    config: common.ConfigArgument = None,
    trials: common.TrialsOption = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Workers: local processes (at most the cores; torch threads: cores // N) or "
            "Ray actors (default: 2, or 1 on a 1-core machine).",
        ),
    ] = None,
    sampler: common.SamplerOption = None,
    seed: common.SeedOption = None,
    study: common.StudyOption = "pikenas",
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
    cost_table: common.CostTableOption = None,
    backend: Annotated[
        str, typer.Option("--backend", help="Where workers run: local (processes) or ray.")
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray: join this cluster (HOST:PORT of 'ray start --head')."),
    ] = None,
    cpus_per_trial: Annotated[
        int | None,
        typer.Option("--cpus-per-trial", help="Ray: CPUs (torch threads) of each worker."),
    ] = None,
    gpus_per_trial: Annotated[
        float | None,
        typer.Option("--gpus-per-trial", help="Ray: GPUs of each worker (0.5: share one)."),
    ] = None,
    evaluator: common.EvaluatorOption = None,
    heartbeat_interval: common.HeartbeatOption = 5.0,
    stale_after: common.StaleAfterOption = 60.0,
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
        out=out,
        study=study,
        storage=storage,
        workers=workers,
        backend=backend,
        ray={
            "address": address,
            "cpus_per_trial": cpus_per_trial,
            "gpus_per_trial": gpus_per_trial,
        },
        evaluator=evaluator,
        heartbeat_interval=heartbeat_interval,
        stale_after=stale_after,
        overrides={
            "trials": trials,
            "sampler": sampler,
            "seed": seed,
            "full_train_top": full_train_top,
            "population_size": population_size,
            "max_ace": max_ace,
            "cost_table": cost_table,
        },
    )
    _report(request, _run_with_display(request, export), export)
