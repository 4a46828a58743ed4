"""The typed specifications a search is run from.

:class:`WorkerSpec` is everything one worker process needs: the resolved search config, the
storage, the study, N, its seed and torch threads, the evaluator, the heartbeat settings, the
folder of the proxy checkpoints (successive halving). Its storage is parsed once into a
:class:`~results.storage.StorageTarget` and carried typed (across a process boundary too). The
process that starts a worker builds it once and sends it as JSON (``model_dump_json``); the
worker (:func:`search.worker.run_worker`) builds its storage, sampler, lock and evaluator from it
alone. :class:`RunRequest` is a whole ``pikenas search`` run: the spec its workers share, the run
folder, how many workers and where they are placed (``local`` processes or ``ray`` actors).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from pikenas.results.storage import StorageTarget, parse_storage
from pikenas.search.config import SearchConfig
from pikenas.space._strict import StrictModel

__all__ = [
    "MAX_SEED",
    "MAX_TRIALS",
    "MAX_WORKERS",
    "STUDY_NAME",
    "BACKENDS",
    "BackendName",
    "RayPlacement",
    "RunRequest",
    "SMALL_INPUT_RESOLUTION",
    "WorkerSpec",
    "available_cores",
    "check_study_name",
    "threads_per_worker",
    "worker_environment",
]

#: seeds are numpy's: 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
MAX_TRIALS = 1_000_000
#: workers of one search (a Ray cluster may hold many machines; local workers: the cores).
MAX_WORKERS = 1024
#: a study name: it becomes the default run folder ``runs/NAME``, so no path characters.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

BackendName = Literal["local", "ray"]
BACKENDS: tuple[str, ...] = get_args(BackendName)

#: inputs up to this many pixels a side train fastest on one torch thread (thread
#: synchronisation dominates such tiny feature maps).
SMALL_INPUT_RESOLUTION = 16


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_environment(threads: int) -> dict[str, str]:
    """Environment variables of a worker process: ``threads`` for the math libraries, and this
    process's import path, so that a worker imports what its parent imports (a custom
    evaluator module, as ``multiprocessing`` does for its children)."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    path = os.pathsep.join(entry for entry in sys.path if entry)
    return {**dict.fromkeys(names, str(threads)), "PYTHONPATH": path}


def threads_per_worker(
    workers: int, cores: int | None = None, resolution: int | None = None
) -> int:
    """Torch threads per worker: ``cores // workers`` (so ``workers x threads <= cores``, at
    least 1), but 1 for inputs of at most :data:`SMALL_INPUT_RESOLUTION` pixels a side."""
    if resolution is not None and resolution <= SMALL_INPUT_RESOLUTION:
        return 1
    return max(1, (cores or available_cores()) // max(1, workers))


def check_study_name(name: str) -> str:
    """``name`` when it is a safe study name (:data:`STUDY_NAME`), else ``ValueError``."""
    if not STUDY_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a study name: use 1 to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it names the run folder runs/NAME)"
        )
    return name


class WorkerSpec(StrictModel):
    """One worker of a study (see the module docstring). ``storage``: the parsed storage target
    (given as a storage URL or a journal file, made absolute); ``seed`` ``None`` draws a random
    one; ``evaluator`` is the ``module:callable`` of an evaluator factory (``None``: the real
    proxy evaluator); ``checkpoints`` the folder (made absolute) whose ``<study>/`` holds the
    proxy checkpoints of successive halving (``None``: none kept, a promoted trial trains from
    scratch)."""

    config: SearchConfig
    storage: StorageTarget
    study_name: str = "pikenas"
    n_trials: int = Field(ge=1, le=MAX_TRIALS)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    threads: int = Field(1, ge=1, le=1024)
    evaluator: str | None = None
    heartbeat_interval: float = Field(5.0, gt=0, le=3600)
    stale_after: float = Field(60.0, gt=0, le=7 * 86400)
    checkpoints: str | None = None

    @field_validator("study_name")
    @classmethod
    def _safe_study_name(cls, value: str) -> str:
        return check_study_name(value)

    @field_validator("checkpoints")
    @classmethod
    def _absolute_checkpoints(cls, value: str | None) -> str | None:
        return str(Path(value).expanduser().resolve()) if value else None

    @field_validator("storage", mode="before")
    @classmethod
    def _parsed_storage(cls, value: Any) -> Any:
        if isinstance(value, str | Path):
            return parse_storage(value, folders=False)
        return value

    @field_validator("config")
    @classmethod
    def _absolute_data_dir(cls, config: SearchConfig) -> SearchConfig:
        data_dir = config.dataset.data_dir
        if not data_dir or Path(data_dir).is_absolute():
            return config
        dataset = config.dataset.model_copy(update={"data_dir": str(Path(data_dir).resolve())})
        return config.with_dataset(dataset)

    @model_validator(mode="after")
    def _live_workers_are_not_stale(self) -> WorkerSpec:
        if self.stale_after <= 2 * self.heartbeat_interval:
            raise ValueError(
                f"--stale-after ({self.stale_after:g} s) must exceed twice "
                f"--heartbeat-interval ({self.heartbeat_interval:g} s), or live workers "
                "would be declared dead"
            )
        return self

    def for_worker(self, index: int, threads: int) -> WorkerSpec:
        """The spec of worker ``index`` of a backend: its own seed (``seed + index``, so that
        workers do not propose the same genomes) and ``threads``."""
        seed = None if self.seed is None else (self.seed + index) % (MAX_SEED + 1)
        return self.model_copy(update={"seed": seed, "threads": threads})


class RayPlacement(StrictModel):
    """Where Ray puts the workers: the cluster ``address`` (``None``: a local Ray), CPUs (and
    torch threads) and GPUs per worker (``None``: local Ray ``cores // workers``, a cluster 1)."""

    address: str | None = None
    cpus_per_trial: int | None = Field(None, ge=1, le=1024)
    gpus_per_trial: float = Field(0.0, ge=0, le=64)


class RunRequest(StrictModel):
    """One ``pikenas search`` run: ``worker`` (every worker's spec, before its seed and threads
    are set), the absolute run folder ``out``, ``workers`` processes placed by ``backend``."""

    worker: WorkerSpec
    out: Path
    workers: int = Field(2, ge=1, le=MAX_WORKERS)
    backend: BackendName = "local"
    ray: RayPlacement = RayPlacement()

    @field_validator("out")
    @classmethod
    def _absolute_out(cls, out: Path) -> Path:
        return out.expanduser().resolve()

    @property
    def n_trials(self) -> int:
        return self.worker.n_trials

    @property
    def config(self) -> SearchConfig:
        return self.worker.config
