"""Search backends by name and the request they all take.

A backend is ``run(request, progress) -> None``: it works on the already created study of
``request`` until it holds ``request.config.search.trials`` COMPLETE trials, calling
``progress(snapshot)`` now and then. ``local`` runs worker processes on this machine
(:mod:`search.local`); ``ray`` (Ray Tune, :mod:`search._ray_backend`) registers itself here the
same way. Backend modules are imported only when chosen.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space.registry import Registry

if TYPE_CHECKING:
    from search.config import SearchConfig
    from search.progress import Snapshot

__all__ = ["RunRequest", "Backend", "BACKENDS", "ProgressCallback"]

ProgressCallback = Callable[["Snapshot"], None]


@dataclass(frozen=True)
class RunRequest:
    """One search run, validated: the resolved config (command-line overrides applied), the
    absolute run folder, the study name, the storage (``None``: the journal ``OUT/study.log``),
    worker processes, the evaluator (``proxy``; ``fake[:DELAY_S]`` in tests and benchmarks),
    heartbeat settings (seconds) and backend-specific ``options``."""

    config: SearchConfig
    out: Path
    study_name: str = "pikenas"
    storage: str | None = None
    workers: int = 2
    backend: str = "local"
    evaluator: str = "proxy"
    heartbeat_interval: float = 5.0
    stale_after: float = 60.0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def storage_target(self) -> str:
        """What ``results.storage.open_storage`` takes: the URL, else the run folder."""
        return self.storage if self.storage is not None else str(self.out)

    @property
    def n_trials(self) -> int:
        return self.config.search.trials


Backend = Callable[[RunRequest, "ProgressCallback | None"], None]
BACKENDS: Registry[Backend] = Registry("backend")


def _lazy(module: str, function: str) -> Backend:
    def run(request: RunRequest, progress: ProgressCallback | None) -> None:
        getattr(importlib.import_module(module), function)(request, progress)

    return run


BACKENDS.add("local", _lazy("search.local", "run_local"))
BACKENDS.add("ray", _lazy("search._ray_backend", "run_ray"))
