"""The trials of a study as a typed :class:`pandas.DataFrame` (one row per trial).

Columns (see :data:`COLUMNS`):

* ``number`` (Int64), ``state`` (``COMPLETE`` / ``PRUNED`` / ``FAIL`` / ``RUNNING`` / ``WAITING``);
* ``accuracy`` (proxy top-1 in [0, 1]) and ``ace_v2`` (ACE): the trial's objective values;
  ``ace_v2`` falls back to the user attr for trials without values (an over-budget trial was
  costed before it was rejected); ``accuracy`` is NaN without values;
* ``ace_v1`` (ACE), ``macs``, ``params`` (Int64), ``elementwise_share`` (share of ACE v2 spent
  on elementwise operations, in [0, 1]);
* ``status``, ``reason``, ``baseline`` (zoo name of an enqueued fixed point), ``duplicate_of``,
  ``worker``, ``archid``;
* successive halving: ``rung_epochs`` (Int64, the epochs of the last rung reached) and
  ``rung_accuracy`` (its validation accuracy: what a trial ``stopped`` at a rung, PRUNED with
  NaN ``accuracy``, achieved), ``rungs`` (list of dicts: ``epochs``, ``val_accuracy``,
  ``decision``, ... per rung; empty without successive halving);
* ``layer_bits`` (``"8/8 4/8 ..."``: weight / input-activation bits per MAC layer, see
  :mod:`results.layers`), ``weight_bits`` and ``activation_bits`` (lists of ints);
* ``datetime_start`` / ``datetime_complete``, ``duration_s`` (s), ``proxy_wall_s`` (s);
* ``val_accuracy``, ``test_accuracy``, ``final_accuracy``, ``final_val_accuracy`` (NaN when not
  fully trained), ``final_wall_s`` (s), ``final_dir``;
* ``arch`` (the ArchConfig JSON string, empty when the trial never got an architecture).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from pikenas.results.layers import bits_string, layer_bits
from pikenas.results.record import DIRECTIONS, FinalResult, StudyRecord, TrialRecord
from pikenas.results.storage import open_study, storage_folder
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import ArchConfigError, RunDirError

__all__ = [
    "COLUMNS",
    "check_pikenas_study",
    "load",
    "final_results",
    "trials_frame",
    "trial_arch",
    "study_info",
    "study_cost_table",
]

logger = logging.getLogger(__name__)

#: column name -> pandas dtype, in display order.
COLUMNS: dict[str, str] = {
    "number": "Int64",
    "state": "str",
    "archid": "str",
    "accuracy": "float64",
    "ace_v2": "float64",
    "ace_v1": "float64",
    "macs": "Int64",
    "params": "Int64",
    "elementwise_share": "float64",
    "status": "str",
    "reason": "str",
    "baseline": "str",
    "duplicate_of": "Int64",
    "worker": "str",
    "rung_epochs": "Int64",
    "rung_accuracy": "float64",
    "rungs": "object",
    "layer_bits": "str",
    "weight_bits": "object",
    "activation_bits": "object",
    "datetime_start": "datetime64[us]",
    "datetime_complete": "datetime64[us]",
    "duration_s": "float64",
    "proxy_wall_s": "float64",
    "images_per_s": "float64",
    "val_accuracy": "float64",
    "test_accuracy": "float64",
    "val_loss": "float64",
    "final_accuracy": "float64",
    "final_val_accuracy": "float64",
    "final_wall_s": "float64",
    "final_dir": "str",
    "arch": "str",
}
#: columns filled from the trial's :class:`TrialRecord` (the rest come from the trial itself).
_RECORD_COLUMNS = tuple(
    name for name in COLUMNS if name in TrialRecord.model_fields and name != "rungs"
)


def load(
    run_dir_or_storage: str | Path | optuna.storages.BaseStorage | optuna.Study,
    study: str | None = None,
) -> pd.DataFrame:
    """All trials of a study as a DataFrame with :data:`COLUMNS`, sorted by ``number``.

    ``run_dir_or_storage``: a run folder, a journal file, a storage URL, a storage object or an
    :class:`optuna.Study` (then ``study`` is ignored). ``study=None`` uses the only study.
    An unknown folder or study raises :class:`~space.errors.RunDirError` (one line).
    """
    if isinstance(run_dir_or_storage, optuna.Study):
        optuna_study = run_dir_or_storage
    else:
        optuna_study = open_study(run_dir_or_storage, study)
    return trials_frame(optuna_study)


def final_results(study: optuna.Study) -> dict[int, FinalResult]:
    """Full-training results by trial number (they live on the study because Optuna does not
    let a finished trial be changed); a ``final_dir`` relative to the run folder is made
    absolute there (a moved run still works)."""
    folder = storage_folder(study._storage)
    finals = {}
    for number, final in StudyRecord.of(study).final_results.items():
        if not Path(final.final_dir).is_absolute() and folder is not None:
            final = final.model_copy(update={"final_dir": str(folder / final.final_dir)})
        finals[number] = final
    return finals


def check_pikenas_study(study: optuna.Study) -> None:
    """Refuse a study that is not a pikenas study (other directions, one objective): its
    front would be wrong, not empty."""
    directions = [direction.name.lower() for direction in study.directions]
    if directions != list(DIRECTIONS):
        raise RunDirError(
            f"study {study.study_name!r} is not a pikenas study: its objectives are "
            f"{', '.join(directions)}, not {' accuracy and '.join(DIRECTIONS)} ACE v2; "
            "pass the --study of a 'pikenas search'"
        )


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """The DataFrame of :func:`load` for an opened study (a pikenas study:
    :func:`check_pikenas_study`)."""
    check_pikenas_study(study)
    finals = final_results(study)
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row = _row(trial)
        final = finals.get(trial.number)
        if final is not None:
            row.update(final.model_dump())
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    for column, dtype in COLUMNS.items():
        if dtype == "object":
            continue
        frame[column] = frame[column].astype(dtype)
    return frame.sort_values("number", ignore_index=True)


def trial_arch(row: pd.Series | dict[str, Any]) -> ArchConfig | None:
    """The ArchConfig of one row of :func:`load` (None when the trial has none)."""
    text = row["arch"]
    if not isinstance(text, str) or not text:
        return None
    return _parse_arch(text)


@functools.lru_cache(maxsize=8192)
def _parse_arch(text: str) -> ArchConfig:
    """Parse an arch attr once (ArchConfig is frozen; a live dashboard re-reads every trial)."""
    return ArchConfig.from_json(text)


def _search_config(record: StudyRecord) -> dict[str, Any]:
    try:
        config = json.loads(record.search_config or "{}")
    except json.JSONDecodeError:
        return {}
    return config if isinstance(config, dict) else {}


def study_info(study: optuna.Study) -> dict[str, str]:
    """How a study was made: ``study``, ``dataset``, ``sampler``, ``cost_table``, ``cost_unit``,
    ``cost_label`` (the cost objective's name), ``pikenas_version`` (``""`` when not recorded).
    """
    record = StudyRecord.of(study)
    search = _search_config(record).get("search")
    sampler = search.get("sampler", "") if isinstance(search, dict) else ""
    return {
        "study": study.study_name,
        "dataset": record.dataset,
        "sampler": str(sampler),
        "cost_table": record.cost_table,
        "cost_unit": record.cost_unit,
        "cost_label": record.metric_names[1],
        "pikenas_version": record.pikenas_version,
    }


def study_cost_table(study: optuna.Study) -> Any:
    """The ``evaluators.ace.CostTable`` that scored the study (its config records it; the
    default table when it does not say)."""
    from pikenas.evaluators.cost import CostTable

    table = _search_config(StudyRecord.of(study)).get("cost_table")
    return CostTable.from_dict(table) if isinstance(table, dict) else CostTable.default()


@functools.lru_cache(maxsize=8192)
def _arch_columns(text: str) -> tuple[str, tuple[int, ...], tuple[int, ...], str]:
    """archid, weight bits, activation bits and bits string of an arch attr (cached)."""
    arch = _parse_arch(text)
    layers = layer_bits(arch)
    return (
        arch.archid,
        tuple(layer.weight_bits for layer in layers),
        tuple(layer.activation_bits for layer in layers),
        bits_string(arch),
    )


def _row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    record = TrialRecord.of(trial)
    values = trial.values if trial.values is not None else []
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        logger.warning("trial %d: non-finite objective values %s ignored", trial.number, values)
        values = []
    row: dict[str, Any] = {name: getattr(record, name) for name in _RECORD_COLUMNS}
    ace_v2 = values[1] if len(values) > 1 else record.ace_v2  # a pruned trial was costed
    if ace_v2 is not None and not math.isfinite(ace_v2):
        ace_v2 = None
    row.update(
        number=trial.number,
        state=trial.state.name,
        accuracy=float(values[0]) if values else math.nan,
        ace_v2=float(ace_v2) if ace_v2 is not None else math.nan,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        duration_s=trial.duration.total_seconds() if trial.duration is not None else math.nan,
        arch=record.arch or "",
        rung_epochs=record.last_rung.epochs if record.last_rung else None,
        rung_accuracy=record.last_rung.val_accuracy if record.last_rung else math.nan,
        rungs=[rung.model_dump() for rung in record.rungs or ()],
        weight_bits=[],
        activation_bits=[],
        layer_bits="",
    )
    if row["arch"]:
        try:
            archid, weight_bits, activation_bits, bits = _arch_columns(row["arch"])
        except ArchConfigError as exc:  # a newer / broken arch must not hide the other trials
            logger.warning("trial %d: unreadable arch attr: %s", trial.number, exc)
        else:
            row["weight_bits"] = list(weight_bits)
            row["activation_bits"] = list(activation_bits)
            row["layer_bits"] = bits
            if row["archid"] is None:
                row["archid"] = archid
    return row
