"""A whole search run: prepare the run folder and study, run a backend, finalize, write outputs.

:func:`prepare_run` creates ``OUT`` (unless it exists), the study (directions, study attributes,
zoo baselines enqueued once; an existing study must have been made with the same search config)
and ``OUT/config.yaml`` (the resolved config, written atomically). Everything that can be wrong
with the user's input has been checked before (:func:`search.config.load_config` and the CLI);
should the study check still fail, a run folder created here is removed again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from search.backends import BACKENDS, ProgressCallback, RunRequest
from search.finalize import FinalizeSummary, Trainer, fake_trainer, finalize

__all__ = ["RunResult", "prepare_run", "run_search", "write_outputs", "atomic_write"]

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    study: optuna.Study
    final: FinalizeSummary | None = None
    outputs: Any = None


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def prepare_run(request: RunRequest) -> optuna.Study:
    """Create (or reopen) the run folder and the study; write ``OUT/config.yaml``."""
    from results.storage import open_storage
    from search.remote_worker import ask_lock_for, open_shared_study
    from search.samplers import make_sampler

    settings = request.config.search
    created = not request.out.exists()
    request.out.mkdir(parents=True, exist_ok=True)
    lock = ask_lock_for(request.storage_target, request.study_name)
    try:
        storage = open_storage(request.storage_target, create=True)
        sampler = make_sampler(settings.sampler, settings.seed, settings.population_size)
        with lock if lock is not None else contextlib.nullcontext():
            study = open_shared_study(request.config, storage, request.study_name, sampler)
    except BaseException:
        if created:
            shutil.rmtree(request.out, ignore_errors=True)
        raise
    finally:
        close = getattr(lock, "close", None)
        if close is not None:
            close()
    atomic_write(request.out / "config.yaml", request.config.to_yaml())
    return study


def _trainer(request: RunRequest) -> Trainer:
    if request.evaluator.startswith("fake"):
        return fake_trainer
    from search.finalize import _real_trainer
    from search.local import threads_per_worker

    threads = threads_per_worker(1, resolution=request.config.space.resolution)
    return _real_trainer(request.config.train_config("full", threads=threads))


def write_outputs(study: optuna.Study, out: Path, *, export: bool = True) -> Any:
    """``front.csv``, ``dashboard.html`` and (``export``) the front's bundles in ``out``."""
    from results.dashboard import write_dashboard
    from results.export import export_pareto
    from results.front import write_front_csv

    write_front_csv(study, out=out / "front.csv")
    write_dashboard(study, out=out / "dashboard.html")
    if export:
        export_pareto(study, out / "exports")


def run_search(
    request: RunRequest,
    *,
    full_train_top: int | None = None,
    progress: ProgressCallback | None = None,
    on_phase: Callable[[str], None] | None = None,
    export: bool = True,
) -> RunResult:
    """Prepare, search with ``request.backend`` until N COMPLETE trials, fully train the
    ``full_train_top`` winners (default: the config's), write the run outputs."""
    from results.storage import open_storage

    study = prepare_run(request)
    BACKENDS.get(request.backend)(request, progress)
    study = optuna.load_study(
        study_name=request.study_name, storage=open_storage(request.storage_target)
    )
    top_k = request.config.search.full_train_top if full_train_top is None else full_train_top
    result = RunResult(study=study)
    if top_k > 0:
        if on_phase is not None:
            on_phase(f"full training of the {top_k} best front candidates")
        result.final = finalize(
            study,
            request.out,
            top_k,
            _trainer(request),
            on_start=(
                (lambda i, n, number: on_phase(f"full training {i + 1}/{n}: trial {number}"))
                if on_phase is not None
                else None
            ),
        )
    if on_phase is not None:
        on_phase("writing front.csv, dashboard.html and exports")
    result.outputs = write_outputs(study, request.out, export=export)
    return result
