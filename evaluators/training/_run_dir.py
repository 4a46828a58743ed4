"""The folder of one full training run (``pikenas train --out DIR``).

Files: ``arch.json`` (the architecture as trained, fitted to the data set), ``config.json``
(the :class:`~evaluators.training.TrainConfig`), ``checkpoint.safetensors`` (after every
epoch), and when finished ``weights.safetensors`` and ``metrics.json`` (written last: its
presence marks a finished run). Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from pikenas.evaluators._atomic import LEDGER_NAME, atomic_write
from pikenas.evaluators.training._checkpoint import load_weights
from pikenas.space._parse import parse_json, read_text
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import ArchConfigError, PikeNASError, RunDirError

if TYPE_CHECKING:
    import torch

__all__ = ["RunFolder", "RUN_FILES"]

RUN_FILES = (
    LEDGER_NAME,
    "arch.json",
    "config.json",
    "checkpoint.safetensors",
    "weights.safetensors",
    "metrics.json",
    "teacher",
)
# Options that do not change what is computed (bit-exactness aside): resuming with another
# thread count, device or data folder path is allowed.
_RESUMABLE_CHANGES = ("threads", "device", "data_dir")


class RunFolder:
    """Paths and reads / writes of one run folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.arch_path = folder / "arch.json"
        self.config_path = folder / "config.json"
        self.checkpoint_path = folder / "checkpoint.safetensors"
        self.weights_path = folder / "weights.safetensors"
        self.metrics_path = folder / "metrics.json"

    def _refuse(self, why: str) -> RunDirError:
        return RunDirError(
            f"{self.folder} {why}; pass another --out (or delete that folder to start over)"
        )

    def read_arch(self) -> ArchConfig:
        try:
            return ArchConfig.from_json(read_text(self.arch_path, RunDirError))
        except ArchConfigError as exc:
            raise self._refuse(f"holds an unreadable {self.arch_path.name} ({exc})") from None

    def read_json(self, path: Path) -> dict[str, Any]:
        """A JSON object file of the folder (``config.json``, ``metrics.json``); a truncated or
        garbage file is one line."""
        data = parse_json(read_text(path, RunDirError), str(path), RunDirError)
        if not isinstance(data, dict):
            raise self._refuse(f"holds a {path.name} that is not a JSON object")
        return data

    def read_metrics(self) -> dict[str, Any]:
        """``metrics.json`` of a finished run."""
        try:
            return self.read_json(self.metrics_path)
        except RunDirError as exc:
            raise RunDirError(
                f"{exc}; delete {self.metrics_path} and {self.weights_path.name} to train again"
            ) from None

    def load_weights(self, model: torch.nn.Module) -> None:
        load_weights(model, self.weights_path)

    def start(self, arch: ArchConfig, config: BaseModel) -> dict[str, Any] | None:
        """Check the folder belongs to this run (or is new) and record arch and config
        (a ``TrainConfig``: its ``from_dict`` reads the stored one back).

        Returns the stored metrics when the run has already finished, else ``None``.
        """
        if self.folder.exists() and not self.folder.is_dir():
            raise self._refuse("is a file, not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        strangers = sorted(
            path.name
            for path in self.folder.iterdir()
            if path.name not in RUN_FILES and not path.name.endswith(".tmp")
        )
        if strangers:
            raise self._refuse(f"holds files that are not a training run ({strangers[0]}, ...)")
        if self.arch_path.exists():
            stored_arch = self.read_arch()
            if stored_arch.canonical_json() != arch.canonical_json():
                raise self._refuse(
                    f"holds a run of another architecture ({stored_arch.name or 'unnamed'}, "
                    f"archid {stored_arch.archid}; this one is {arch.archid})"
                )
        if self.config_path.exists():
            try:
                stored = type(config).from_dict(self.read_json(self.config_path))
            except (PikeNASError, ValueError) as exc:
                raise self._refuse(f"holds an unreadable config.json ({exc})") from None
            mine, theirs = config.model_dump(), stored.model_dump()
            for option in mine:
                if option not in _RESUMABLE_CHANGES and mine[option] != theirs[option]:
                    raise self._refuse(
                        f"holds a run with {option}={theirs[option]!r} (this one has "
                        f"{mine[option]!r})"
                    )
        if self.metrics_path.exists() and self.weights_path.exists():
            return self.read_metrics()
        if not self.arch_path.exists():
            atomic_write(self.arch_path, arch.to_json() + "\n")
        if not self.config_path.exists():
            atomic_write(self.config_path, config.model_dump_json(indent=2) + "\n")
        return None

    def discard_unstarted(self, created: bool) -> None:
        """Remove what :meth:`start` wrote when no epoch finished (nothing to resume), and the
        folder itself when ``created`` here and now empty."""
        if self.checkpoint_path.exists() or (self.folder / "teacher").exists():
            return
        for path in (self.arch_path, self.config_path, self.folder / LEDGER_NAME):
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()

    def finish(self, arch: ArchConfig, fields: dict[str, Any]) -> None:
        """Write ``metrics.json`` (last: it marks the run finished): the architecture's name
        and archid, then ``fields`` (data set, seed and the ``TrainResult``)."""
        metrics: dict[str, Any] = {"name": arch.name, "archid": arch.archid, **fields}
        atomic_write(self.metrics_path, json.dumps(metrics, indent=2) + "\n")
