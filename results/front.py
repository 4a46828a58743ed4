"""The Pareto front of a study as a table, records (JSON) and ``OUT/front.csv``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from pikenas.results._atomic import atomic_write
from pikenas.results.pareto import pareto_front
from pikenas.results.trials import load
from pikenas.space.errors import RunDirError

__all__ = ["FRONT_COLUMNS", "FRONT_CSV", "front_table", "front_records", "write_front_csv"]

FRONT_CSV = "front.csv"
#: columns of the front table, in order (``accuracy`` = proxy accuracy, ACE in ACE units).
FRONT_COLUMNS = (
    "number",
    "accuracy",
    "ace_v2",
    "ace_v1",
    "final_accuracy",
    "archid",
    "macs",
    "params",
    "elementwise_share",
    "layer_bits",
    "baseline",
    "status",
)


def front_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The front of a trials frame (from :func:`results.trials.load`): :data:`FRONT_COLUMNS`,
    sorted by ACE v2 ascending (so accuracy ascends too), ties by trial number.
    """
    return pareto_front(frame).loc[:, list(FRONT_COLUMNS)].reset_index(drop=True)


def front_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The front as JSON-ready dicts; missing values are ``None``."""
    records = []
    for row in front_table(frame).to_dict(orient="records"):
        clean: dict[str, Any] = {}
        for key, value in row.items():
            if value is None or value is pd.NA or (
                isinstance(value, float) and not math.isfinite(value)
            ):
                clean[key] = None
            elif hasattr(value, "item"):  # numpy scalar -> Python scalar
                clean[key] = value.item()
            else:
                clean[key] = value
        records.append(clean)
    return records


def write_front_csv(
    run: str | Path | optuna.Study,
    study: str | None = None,
    out: str | Path | None = None,
) -> Path:
    """Write the front of ``run`` to ``out`` (default ``RUN/front.csv``) atomically; return it.

    ``run`` is a run folder, storage URL or study; a URL or study needs ``out``.
    """
    table = front_table(load(run, study))
    if out is None:
        if isinstance(run, optuna.Study) or not Path(run).is_dir():
            raise RunDirError(f"{run!r} is not a run folder; pass out=PATH for front.csv")
        out = Path(run) / FRONT_CSV
    return atomic_write(Path(out), table.to_csv(index=False))
