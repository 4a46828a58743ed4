"""Pure data of the dashboard's decision panels (drawn by :mod:`results.insight_figures`):
parameter importance per objective, the timeline of the workers, ACE v2 by operation kind of a
front member beside a baseline, and hypervolume over wall-clock and CPU time.

Accuracy is a fraction in [0, 1]; ACE in the cost table's unit; times in seconds.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna
import pandas as pd

from pikenas.results.pareto import hypervolume_history, reference_point

__all__ = [
    "MIN_IMPORTANCE_TRIALS",
    "hypervolume_reference",
    "hypervolume_time_data",
    "importance_data",
    "op_breakdown_data",
    "timeline_data",
    "trial_cpu_s",
]

logger = logging.getLogger(__name__)

#: parameter importance needs at least this many COMPLETE trials (fewer: an empty table).
MIN_IMPORTANCE_TRIALS = 5


def importance_data(
    study: optuna.Study, evaluator: optuna.importance.BaseImportanceEvaluator | None = None
) -> pd.DataFrame:
    """Importance of each searched parameter for each objective, by Optuna's own importance
    evaluators (default: Optuna's default, PED-ANOVA). Optuna's evaluators rank parameters
    for *low* target values, so accuracy is negated (its importance for high accuracy) and
    ACE v2 is taken as it is.

    Returns columns ``param``, ``accuracy``, ``ace_v2`` (importances, each summing to 1 over
    the parameters when defined), sorted by the larger of the two, descending; empty with
    fewer than :data:`MIN_IMPORTANCE_TRIALS` COMPLETE trials or when Optuna cannot compute
    them (e.g. no parameter varies).
    """
    columns = ["param", "accuracy", "ace_v2"]
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return pd.DataFrame(columns=columns)
    targets = {
        "accuracy": lambda trial: -trial.values[0],
        "ace_v2": lambda trial: trial.values[1],
    }
    values: dict[str, dict[str, float]] = {}
    for name, target in targets.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PED-ANOVA's "low target" reminder: handled
                values[name] = dict(
                    optuna.importance.get_param_importances(
                        study, evaluator=evaluator, target=target, normalize=True
                    )
                )
        except (RuntimeError, ValueError) as exc:
            logger.info("no parameter importance for %s: %s", name, exc)
            return pd.DataFrame(columns=columns)
    params = sorted(set(values["accuracy"]) | set(values["ace_v2"]))
    table = pd.DataFrame(
        {
            "param": params,
            "accuracy": [float(values["accuracy"].get(p, 0.0)) for p in params],
            "ace_v2": [float(values["ace_v2"].get(p, 0.0)) for p in params],
        }
    )
    order = np.lexsort((table["param"], -np.maximum(table["accuracy"], table["ace_v2"])))
    return table.iloc[order].reset_index(drop=True)


def trial_cpu_s(rungs: Any, proxy_wall_s: Any) -> float:
    """CPU seconds a trial spent training: the sum of its ``rungs``' ``cpu_s`` when recorded,
    else its proxy wall time (one thread), else 0."""
    cpu = sum(float(rung.get("cpu_s") or 0.0) for rung in rungs) if isinstance(rungs, list) else 0
    if cpu > 0:
        return cpu
    wall = float(proxy_wall_s) if proxy_wall_s is not None else math.nan
    return wall if math.isfinite(wall) else 0.0


def timeline_data(frame: pd.DataFrame) -> pd.DataFrame:
    """One bar per trial that started: ``number``, ``worker`` (``host:pid``, ``"?"`` when not
    recorded), ``start`` and ``end`` (datetimes; a running trial ends now), ``seconds``,
    ``outcome`` (``complete``, ``stopped``, ``over budget``, ``duplicate``, ``failed``,
    ``running``), ``baseline``. Sorted by worker then start."""
    started = frame[frame["datetime_start"].notna()]
    now = pd.Timestamp.now()
    end = started["datetime_complete"].where(started["datetime_complete"].notna(), now)
    outcome = []
    for row in started.itertuples(index=False):
        if row.state == "RUNNING":
            outcome.append("running")
        elif row.status == "stopped":
            outcome.append("stopped")
        elif row.status == "over_budget":
            outcome.append("over budget")
        elif row.status == "duplicate":
            outcome.append("duplicate")
        elif row.state == "COMPLETE":
            outcome.append("complete")
        else:
            outcome.append("failed")
    table = pd.DataFrame(
        {
            "number": started["number"].astype(int).to_numpy(),
            "worker": started["worker"].fillna("?").astype(str).to_numpy(),
            "start": started["datetime_start"].to_numpy(),
            "end": end.to_numpy(),
            "outcome": outcome,
            "baseline": started["baseline"].fillna("").astype(str).to_numpy(),
        }
    )
    table["seconds"] = (table["end"] - table["start"]).dt.total_seconds()
    return table.sort_values(["worker", "start", "number"], ignore_index=True)


def hypervolume_reference(frame: pd.DataFrame) -> tuple[float, float]:
    """The reference point of :func:`hypervolume_time_data` (the default one over the
    completed trials, see :func:`results.pareto.reference_point`)."""
    done = frame[frame["state"] == "COMPLETE"]
    return reference_point(done["ace_v2"].to_numpy(float))


def hypervolume_time_data(frame: pd.DataFrame) -> pd.DataFrame:
    """Hypervolume after each completed trial against the time it took to get there:
    ``number``, ``normalized`` (hypervolume / reference box), ``wall_s`` (seconds from the first
    trial's start to this trial's completion) and ``cpu_s`` (training CPU seconds, see
    :func:`trial_cpu_s`, of every trial that had finished by then, stopped ones included)."""
    columns = ["number", "normalized", "wall_s", "cpu_s"]
    done = frame[(frame["state"] == "COMPLETE") & frame["datetime_complete"].notna()]
    if done.empty:
        return pd.DataFrame(columns=columns)
    # in completion order (workers finish out of trial-number order): rank as "number"
    done = done.sort_values(["datetime_complete", "number"], ignore_index=True)
    history = hypervolume_history(done.assign(number=np.arange(len(done))))
    finished = frame[frame["datetime_complete"].notna()].sort_values("datetime_complete")
    cpu = np.cumsum(
        [
            trial_cpu_s(rungs, wall)
            for rungs, wall in zip(finished["rungs"], finished["proxy_wall_s"], strict=True)
        ]
    )
    times = done["datetime_complete"].to_numpy()
    index = np.searchsorted(finished["datetime_complete"].to_numpy(), times, side="right") - 1
    origin = frame["datetime_start"].dropna().min()
    return pd.DataFrame(
        {
            "number": done["number"].to_numpy(int),
            "normalized": history["normalized"].to_numpy(float),
            "wall_s": (pd.Series(times) - origin).dt.total_seconds().to_numpy(float),
            "cpu_s": cpu[index],
        }
    )


def _op_kind(row: Mapping[str, Any]) -> str:
    """``mul`` or ``mul (float)``: the op kind, marked when its operands are floats."""
    return f"{row['op']} (float)" if row.get("float_operands") and row["op"] != "mac" else row["op"]


def op_breakdown_data(reports: Mapping[str, Mapping[str, Any] | Any]) -> pd.DataFrame:
    """ACE v2 of several networks split by operation kind, for bars side by side.

    ``reports``: label (e.g. ``"trial 12"``, ``"tiny-w8a8 (baseline)"``) -> ACE report (an
    ``AceReport`` or its ``to_dict()``). Returns columns ``model``, ``op`` (``mac``, ``mul``,
    ``add``, ``compare``, ``round``, ``shift``; ``" (float)"`` appended to elementwise kinds
    on float operands), ``cost`` (ACE v2 of that kind), ``share`` (of the model's total), in
    the order of ``reports`` then descending cost.
    """
    rows = []
    for label, report in reports.items():
        data = report.to_dict() if hasattr(report, "to_dict") else report
        costs: dict[str, float] = {}
        for row in data["breakdown"]:
            kind = _op_kind(row)
            costs[kind] = costs.get(kind, 0.0) + float(row["cost"])
        total = sum(costs.values())
        for kind, cost in sorted(costs.items(), key=lambda item: (-item[1], item[0])):
            rows.append((label, kind, cost, cost / total if total > 0 else math.nan))
    return pd.DataFrame(rows, columns=["model", "op", "cost", "share"])
