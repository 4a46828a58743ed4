"""The study contract as typed records: what search writes and results reads, mapped to and from
Optuna's attributes in one place (docs/study_contract.md shows these fields; a test keeps the
two equal).

* :class:`TrialRecord`: the user attributes of one trial (with :class:`RungResult` per rung of
  successive halving it reached);
* :class:`StudyRecord`: the user attributes of the study (with :class:`FinalResult` per fully
  trained trial);
* :class:`WorkerReport`: what one worker did, a study system attribute
  ``pikenas:worker:<host:pid>`` written when it stops (how a backend learns its workers'
  outcomes);
* :data:`HEARTBEAT_ATTR`: the trial system attribute a running trial's worker refreshes.

Reading is lenient where studies outlive versions: unknown attributes are ignored and a field
with an unreadable value is dropped with a warning, so one odd trial never hides the others.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

import optuna
from pydantic import BaseModel, Field, ValidationError

from pikenas.evaluators.candidate import EvaluationStatus, RungDecision, RungResult
from pikenas.space._strict import StrictModel

__all__ = [
    "DIRECTIONS",
    "HEARTBEAT_ATTR",
    "OBJECTIVES",
    "TRIAL_STATUSES",
    "FinalResult",
    "RungDecision",
    "RungResult",
    "StudyRecord",
    "TrialRecord",
    "TrialStatus",
    "WorkerReport",
    "contract_tables",
    "record_worker_report",
    "update_study_record",
    "worker_reports",
]

logger = logging.getLogger(__name__)

#: the trial values, in order, and their directions.
OBJECTIVES = ("accuracy", "ace_v2")
DIRECTIONS = ("maximize", "minimize")
HEARTBEAT_ATTR = "pikenas:heartbeat"
_WORKER_PREFIX = "pikenas:worker:"

#: a trial's ``status``: how its candidate's evaluation ended (one definition, in evaluators).
TrialStatus = EvaluationStatus
TRIAL_STATUSES: tuple[str, ...] = get_args(TrialStatus)


def _read(model: type[StrictModel], attrs: Mapping[str, Any], what: str) -> Any:
    known = {key: value for key, value in attrs.items() if key in model.model_fields}
    while True:
        try:
            return model.model_validate(known)
        except ValidationError as exc:
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            if not bad & set(known):
                raise
            logger.warning("%s: unreadable %s dropped", what, ", ".join(sorted(bad)))
            known = {key: value for key, value in known.items() if key not in bad}


class TrialRecord(StrictModel):
    """The user attributes of one trial (every field is optional: a trial gets them as it goes;
    one that got an architecture has all of ``arch`` … ``elementwise_share``)."""

    arch: str | None = Field(None, description="the ArchConfig JSON (compact), fitted to the data")
    archid: str | None = Field(None, description="hash of `arch`: equal candidates share it")
    ace_v1: float | None = Field(None, description="ACE v1: sum over MACs of w bits x a bits")
    ace_v2: float | None = Field(None, description="ACE v2 under the study's cost table")
    macs: int | None = Field(None, description="multiply-accumulates of one forward pass")
    params: int | None = Field(None, description="parameters")
    elementwise_share: float | None = Field(
        None, description="share of ACE v2 spent on elementwise operations, in [0, 1]"
    )
    val_accuracy: float | None = Field(None, description="proxy validation top-1 in [0, 1]")
    test_accuracy: float | None = Field(None, description="proxy test top-1 in [0, 1]")
    val_loss: float | None = Field(None, description="proxy validation loss")
    proxy_wall_s: float | None = Field(None, description="seconds of proxy training")
    images_per_s: float | None = Field(None, description="proxy training throughput")
    status: TrialStatus | None = Field(
        None,
        description="ok (trained), duplicate (values of `duplicate_of`), over_budget "
        "(ACE v2 over max_ace, not trained), stopped (PRUNED at a rung of successive halving; "
        "its results are in `rungs`), failed",
    )
    reason: str | None = Field(
        None, description="why it is over_budget, stopped or failed (one line)"
    )
    rungs: tuple[RungResult, ...] | None = Field(
        None, description="successive halving: its result at each rung reached, in order"
    )
    duplicate_of: int | None = Field(
        None, description="the trial whose values (or rung results) a duplicate took"
    )
    baseline: str | None = Field(None, description="zoo name of an enqueued fixed point")
    worker: str | None = Field(None, description="host:pid of the worker that ran it")
    retry_of: int | None = Field(None, description="the failed trial whose genome this retries")
    retries: int | None = Field(None, description="times this genome has been retried")
    retry_due: bool | None = Field(
        None, description="failed by recovery; its candidate is enqueued again (`retry_of`)"
    )

    def to_attrs(self) -> dict[str, Any]:
        """The Optuna user attributes (unset fields are absent; ``rungs`` is a list of
        objects)."""
        data = self.model_dump(exclude_none=True)
        if self.rungs is not None:
            data["rungs"] = [rung.model_dump() for rung in self.rungs]
        return data

    @property
    def last_rung(self) -> RungResult | None:
        """The last rung it reached (None without successive halving)."""
        return self.rungs[-1] if self.rungs else None

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        return _read(cls, attrs, "trial attributes")

    @classmethod
    def of(cls, trial: optuna.trial.FrozenTrial) -> TrialRecord:
        return _read(cls, trial.user_attrs, f"trial {trial.number}")


class FinalResult(StrictModel):
    """Full training of one winner (a study attribute: Optuna does not let a finished trial
    change)."""

    final_accuracy: float = Field(description="test top-1 after full training, in [0, 1]")
    final_val_accuracy: float = Field(description="validation top-1 after full training")
    final_wall_s: float = Field(description="seconds of full training")
    final_dir: str = Field(
        description="its training folder, relative to the run folder (that of the study's "
        "journal or SQLite file) when inside it, else absolute"
    )


class StudyRecord(StrictModel):
    """The user attributes of a pikenas study."""

    pikenas_version: str = Field("", description="the pikenas version that created it")
    dataset: str = Field("", description="data set name")
    cost_table: str = Field("", description="name of the cost table that scores ACE v2")
    cost_unit: str = Field("", description="unit of ACE v2 under that table (bit-ops, pJ, ...)")
    evaluator: str = Field(
        "",
        description='what evaluates its candidates: "pikenas" (the proxy evaluator) or the '
        "MODULE:CALLABLE of a custom evaluator factory; every worker must use the same",
    )
    final_results: dict[int, FinalResult] = Field(
        default_factory=dict, description="trial number -> FinalResult of the trained winners"
    )
    kendall_tau: float | None = Field(
        None, description="Kendall tau-b of proxy vs final accuracy of the winners"
    )
    search_config: str = Field(
        "", description="the resolved search config as JSON; written last: the study is ready"
    )

    def to_attrs(self) -> dict[str, Any]:
        """The Optuna user attributes, ``search_config`` last."""
        data = self.model_dump(mode="json")
        data["final_results"] = {str(k): v for k, v in data["final_results"].items()}
        return data

    @classmethod
    def of(cls, study: optuna.Study) -> StudyRecord:
        return _read(cls, study.user_attrs, f"study {study.study_name}")

    @property
    def metric_names(self) -> list[str]:
        """Names of the two objectives as dashboards show them (the cost one names its table)."""
        unit = f" ({self.cost_unit})" if self.cost_unit else ""
        return [OBJECTIVES[0], f"{self.cost_table or OBJECTIVES[1]}{unit}"]


def update_study_record(study: optuna.Study, **changes: Any) -> StudyRecord:
    """Validate ``changes`` as :class:`StudyRecord` fields and write just those attributes."""
    record = StudyRecord.model_validate({**StudyRecord.of(study).model_dump(), **changes})
    attrs = record.to_attrs()
    for key in changes:
        study.set_user_attr(key, attrs[key])
    return record


class WorkerReport(StrictModel):
    """What one worker did until it stopped."""

    label: str = Field(description="host:pid")
    complete: int = Field(0, description="trials it told COMPLETE")
    pruned: int = Field(0, description="trials it told PRUNED (over budget)")
    stopped: int = Field(0, description="trials it stopped at a rung of successive halving")
    failed: int = Field(0, description="trials it told FAIL")
    recovered: tuple[int, ...] = Field((), description="stale trials of dead workers it failed")
    gave_up: str | None = Field(None, description="why it stopped before N COMPLETE trials")
    error: str | None = Field(None, description="the error that stopped it (one line)")


def record_worker_report(study: optuna.Study, report: WorkerReport) -> None:
    """Store ``report`` as the study system attribute of its worker."""
    key = _WORKER_PREFIX + report.label
    study._storage.set_study_system_attr(study._study_id, key, report.model_dump(mode="json"))


def worker_reports(study: optuna.Study) -> dict[str, WorkerReport]:
    """Every stored :class:`WorkerReport` of ``study`` by worker label."""
    reports = {}
    for key, value in study._storage.get_study_system_attrs(study._study_id).items():
        if key.startswith(_WORKER_PREFIX) and isinstance(value, dict):
            reports[key.removeprefix(_WORKER_PREFIX)] = _read(WorkerReport, value, key)
    return reports


def _type_name(annotation: Any) -> str:
    """A field's type as the contract shows it (``|`` would break a Markdown table)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in args)
    if origin is Literal:
        return " or ".join(f'"{arg}"' for arg in args)
    if origin is not None:
        inner = ", ".join("..." if arg is Ellipsis else _type_name(arg) for arg in args)
        return f"{origin.__name__}[{inner}]"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def contract_tables() -> str:
    """The Markdown field tables of the records (docs/study_contract.md holds exactly these)."""
    sections = []
    for model in (TrialRecord, RungResult, StudyRecord, FinalResult, WorkerReport):
        rows = [
            f"### {model.__name__}",
            "",
            _first_line(model),
            "",
            "| attribute | type | meaning |",
        ]
        rows.append("|---|---|---|")
        for name, field in model.model_fields.items():
            rows.append(f"| `{name}` | {_type_name(field.annotation)} | {field.description} |")
        sections.append("\n".join(rows))
    return "\n\n".join(sections) + "\n"


def _first_line(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())
