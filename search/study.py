"""The search study: open or create it, check it is this search's, enqueue the zoo baselines.

Every process of a search (the driver, a local worker, a Ray actor, ``pikenas worker`` on any
machine) opens the study through :func:`open_search_study`, holding the study's ask lock
(:mod:`search.lock`) so that two processes starting together do not both initialise it. A new
study gets its directions ``maximize, minimize``, the :class:`~results.record.StudyRecord`
attributes, metric names that say which cost table scores ACE v2, and the baselines enqueued
once; ``search_config`` is written last, so its presence marks a ready study (a creation killed
before it is completed by the next process, which enqueues only the baselines still missing).
An existing study must have been made by the same search: the same evaluator (a fake one never
mixes its values with real ones in one front), the same cost table (checked first, for a
precise message) and the same config apart from its ``search:`` run settings.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from importlib.metadata import version
from typing import TYPE_CHECKING

import optuna

from pikenas.results.record import DIRECTIONS, StudyRecord, TrialRecord, update_study_record
from pikenas.search._evaluator import DEFAULT_EVALUATOR, evaluator_name
from pikenas.space.errors import PikeNASError, SearchConfigError

if TYPE_CHECKING:
    from pikenas.search.config import SearchConfig

__all__ = ["open_search_study"]


def open_search_study(
    config: SearchConfig,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    sampler: optuna.samplers.BaseSampler | None = None,
    evaluator: str | None = None,
) -> optuna.Study:
    """Load ``study_name`` or create it (see the module docstring); call it under the ask lock.
    ``evaluator`` is the ``--evaluator`` reference (``None``: the real proxy evaluator)."""
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        directions=list(DIRECTIONS),
        sampler=sampler,
        load_if_exists=True,
    )
    directions = [direction.name.lower() for direction in study.directions]
    if directions != list(DIRECTIONS):
        raise PikeNASError(
            f"study {study_name!r} has directions {directions}, not {list(DIRECTIONS)}; it is "
            "not a pikenas study: pass another --study name"
        )
    record = StudyRecord.of(study)
    name = evaluator_name(evaluator)
    if not record.search_config:
        _initialise(study, config, name)
    else:
        _check_same_evaluator(study_name, record, name)
        _check_same_search(study_name, record, config)
    return study


def _initialise(study: optuna.Study, config: SearchConfig, evaluator: str) -> None:
    table = config.cost_table_object()
    record = update_study_record(
        study,
        pikenas_version=version("pikenas"),
        dataset=config.dataset.name,
        cost_table=table.name,
        cost_unit=table.unit,
        evaluator=evaluator,
    )
    with warnings.catch_warnings():  # experimental since Optuna 3.2, and what dashboards show
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(record.metric_names)
    # A creation killed before search_config was written enqueued some already: not again.
    enqueued = Counter(
        TrialRecord.of(trial).baseline for trial in study.get_trials(deepcopy=False)
    )
    for name, genome in config.baseline_genomes():
        if enqueued[name] > 0:
            enqueued[name] -= 1
            continue
        study.enqueue_trial(genome, user_attrs=TrialRecord(baseline=name).to_attrs())
    update_study_record(study, search_config=config.to_json())


def _check_same_evaluator(study_name: str, record: StudyRecord, evaluator: str) -> None:
    """Refuse another evaluator than the study's (a study made before evaluators were recorded
    keeps no name and is not checked)."""
    if record.evaluator and record.evaluator != evaluator:
        wanted = (
            "no --evaluator"
            if record.evaluator == DEFAULT_EVALUATOR
            else f"--evaluator {record.evaluator}"
        )
        raise SearchConfigError(
            f"study {study_name!r} is evaluated by {record.evaluator!r}, not {evaluator!r}; pass "
            f"{wanted} as its other workers do (or another --study)"
        )


def _check_same_search(study_name: str, record: StudyRecord, config: SearchConfig) -> None:
    from pikenas.search.config import config_from_dict

    try:  # read back as a SearchConfig: equal configs compare equal whatever their spelling
        stored = config_from_dict(json.loads(record.search_config), check_references=False)
    except (ValueError, PikeNASError):
        stored = None
    table = config.cost_table_object()
    if stored is not None and stored.cost_table != config.cost_table:
        mine = repr(table.name) if table.name != record.cost_table else "another table of that name"
        raise SearchConfigError(
            f"study {study_name!r} was scored with cost table {record.cost_table!r}, this "
            f"search uses {mine}; pass the study's --cost-table (or another --study)"
        )
    if stored is None or stored.searched_json() != config.searched_json():
        raise SearchConfigError(
            f"study {study_name!r} was created with another search config; pass the same "
            "CONFIG file as the other workers (or another --study name)"
        )
