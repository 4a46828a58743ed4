"""A whole search run: prepare the run folder and study, place the workers, finalize, write
the outputs.

:func:`prepare_run` creates ``OUT`` (unless it exists), the study (:mod:`search.study`, under
the ask lock) and ``OUT/config.yaml`` (the resolved config, written atomically). Everything that
can be wrong with the user's input has been checked before (:func:`search.config.load_config`
and the CLI); should the study check still fail, a run folder created here is removed again.
The backend then places ``request.workers`` workers (:func:`search.local.run_local` or
:func:`search._ray.run_ray`), which all run :func:`search.worker.run_worker`.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna

from pikenas.evaluators._atomic import LEDGER_NAME, atomic_write, check_replaceable, check_target
from pikenas.results.export.bundle import BundleError
from pikenas.results.storage import open_storage
from pikenas.search._evaluator import make_evaluator
from pikenas.search.finalize import FinalizeSummary, finalize
from pikenas.search.lock import ask_lock
from pikenas.search.progress import Snapshot
from pikenas.search.spec import RunRequest, threads_per_worker
from pikenas.search.study import open_search_study
from pikenas.space.errors import RunDirError

__all__ = [
    "RUN_OUTPUTS",
    "RunResult",
    "check_run_outputs",
    "prepare_run",
    "run_backend",
    "run_search",
    "write_outputs",
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[Snapshot], None]
#: ``on_phase(text, done=None, total=None)``: a step after the search (``done`` of ``total``)
PhaseCallback = Callable[..., None]


@dataclass
class RunResult:
    """What a run produced: its study, the full-training summary, and ``export_error`` when
    some front bundles failed (the other outputs were written)."""

    study: optuna.Study
    final: FinalizeSummary | None = None
    export_error: BundleError | None = None


#: what a run writes in ``OUT`` (a name ending in "/" is a folder of bundles): checked up front,
#: so a user's file of one of these names is refused before anything is written.
RUN_OUTPUTS = ("config.yaml", "front.csv", "dashboard.html", "exports/")


def _check_utf8(path: Path, what: str) -> None:
    """Refuse (one line, exit 2) a ``path`` that is not valid UTF-8: the study, the workers'
    JSON specs and the logs carry it as text."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise RunDirError(
            f"{what} {shown} is not a valid UTF-8 path; choose a name of valid UTF-8 characters"
        ) from None


def check_run_outputs(out: Path) -> None:
    """Refuse (one line, exit 2) a run folder whose path is not valid UTF-8, and a
    ``RUN_OUTPUTS`` entry of ``out`` that pikenas did not write; a folder of bundles must hold
    only bundles that pikenas wrote."""
    _check_utf8(out, "run folder")
    for name in RUN_OUTPUTS:
        path = out / name.rstrip("/")
        if not name.endswith("/"):
            check_replaceable(path)
            continue
        check_target(path, folder=True)
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                if entry.name != LEDGER_NAME and not entry.name.endswith((".tmp", ".old")):
                    check_replaceable(entry, folder=True)


def prepare_run(request: RunRequest) -> optuna.Study:
    """Create (or reopen) the run folder and the study; write ``OUT/config.yaml``. Every input
    is checked before anything is written."""
    check_run_outputs(request.out)
    if request.worker.storage.path is not None:
        _check_utf8(request.worker.storage.path, "storage file")
    created = not request.out.exists()
    request.out.mkdir(parents=True, exist_ok=True)
    target = request.worker.storage
    lock = ask_lock(target, request.worker.study_name)
    try:
        with lock:
            storage = open_storage(target, create=True)
            study = open_search_study(
                request.config,
                storage,
                request.worker.study_name,
                evaluator=request.worker.evaluator,
            )
    except BaseException:
        if created:
            shutil.rmtree(request.out, ignore_errors=True)
        raise
    finally:
        lock.close()
    atomic_write(request.out / "config.yaml", request.config.to_yaml())
    return study


def run_backend(request: RunRequest, progress: ProgressCallback | None = None) -> None:
    """Place the workers of ``request`` until its study holds N COMPLETE trials."""
    if request.backend == "ray":
        from pikenas.search._ray import run_ray

        run_ray(request, progress)
    else:
        from pikenas.search.local import run_local

        run_local(request, progress)


def write_outputs(study: optuna.Study, out: Path, *, export: bool = True) -> BundleError | None:
    """``front.csv``, ``dashboard.html`` and (``export``) the front's bundles in ``out``; the
    :class:`BundleError` of bundles that failed (every other output is written)."""
    from pikenas.results.dashboard import write_dashboard
    from pikenas.results.export.bundle import export_pareto
    from pikenas.results.front import write_front_csv
    from pikenas.results.optuna_views import store_dashboard_views

    write_front_csv(study, out=out / "front.csv")
    write_dashboard(study, out=out / "dashboard.html")
    store_dashboard_views(study)  # the same figures in optuna-dashboard's view of the study
    if export:
        try:
            export_pareto(study, out / "exports")
        except BundleError as exc:
            logger.error("%s", exc)
            return exc
    return None


def run_search(
    request: RunRequest,
    *,
    progress: ProgressCallback | None = None,
    on_phase: PhaseCallback | None = None,
    export: bool = True,
    study: optuna.Study | None = None,
) -> RunResult:
    """Prepare (unless ``study`` is the one :func:`prepare_run` gave), search until N COMPLETE
    trials, fully train the config's ``full_train_top`` winners, write the run outputs."""
    if study is None:
        study = prepare_run(request)
    run_backend(request, progress)
    top_k = request.config.search.full_train_top
    result = RunResult(study=study)
    if top_k > 0:
        if on_phase is not None:
            on_phase(f"full training of the {top_k} best front candidates")
        threads = threads_per_worker(1, resolution=request.config.space.resolution)
        evaluator = make_evaluator(request.worker.evaluator, request.config, threads)
        result.final = finalize(
            study,
            request.out,
            top_k,
            evaluator,
            on_start=(
                (lambda i, n, number: on_phase(f"full training {i + 1}/{n}: trial {number}", i, n))
                if on_phase is not None
                else None
            ),
        )
    if on_phase is not None:
        on_phase("writing front.csv, dashboard.html" + (" and exports" if export else ""))
    result.export_error = write_outputs(study, request.out, export=export)
    return result
