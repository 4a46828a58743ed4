"""Pure data functions behind the figures (tested; :mod:`results.figures` only draws them).

Every function takes the trials frame of :func:`results.trials.load` (or an ACE report) and
returns plain DataFrames / dicts. Accuracy is a fraction in [0, 1]; ACE values are in the cost
table's unit (bit-ops).
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pikenas.results.front import front_table
from pikenas.results.layers import arch_summary, layer_bits
from pikenas.results.pareto import hypervolume_history, pareto_mask
from pikenas.results.ranking import kendall_tau
from pikenas.results.trials import trial_arch
from pikenas.space.arch import ArchConfig
from pikenas.space.errors import ArchConfigError

__all__ = [
    "MIN_TAU_POINTS",
    "pareto_scatter_data",
    "rungs_data",
    "hypervolume_data",
    "bits_heatmap_data",
    "ace_breakdown_data",
    "proxy_final_data",
]

logger = logging.getLogger(__name__)

# Start with a logarithmic ACE axis when the costs span more than this ratio.
_LOG_AXIS_RATIO = 3.0
#: Kendall tau of proxy vs final accuracy is shown from this many fully trained trials on.
MIN_TAU_POINTS = 5


def _completed(frame: pd.DataFrame) -> pd.DataFrame:
    done = frame[frame["state"] == "COMPLETE"]
    finite = np.isfinite(done["accuracy"].to_numpy(float)) & np.isfinite(
        done["ace_v2"].to_numpy(float)
    )
    return done[finite].sort_values("number", ignore_index=True)


def _summary(row: pd.Series) -> str:
    text = row["arch"]
    if not isinstance(text, str) or not text:
        return "(no architecture recorded)"
    return _summary_of(text)


@functools.lru_cache(maxsize=8192)
def _summary_of(arch_json: str) -> str:
    try:
        return arch_summary(ArchConfig.from_json(arch_json))
    except ArchConfigError:
        return "(unreadable architecture)"


def pareto_scatter_data(
    frame: pd.DataFrame, zoo_ace: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """Data of the Pareto scatter.

    Returns a dict with

    * ``points``: one row per completed trial with finite objectives (``number``, ``accuracy``,
      ``ace_v2``, ``ace_v1``, ``mac_cost`` and ``elementwise_cost`` (ACE v2 split by the
      trial's ``elementwise_share``; NaN when unknown), ``on_front``, ``baseline`` (zoo name or
      ``""``), ``status``, ``archid``, ``layer_bits``, ``summary`` (one-line architecture));
    * ``front``: the front rows (``number``, ``accuracy``, ``ace_v2``) sorted by ACE v2, to be
      drawn as a step line (horizontal then vertical);
    * ``zoo``: reference ACE v2 of zoo models costed with ``count_ace`` (``name``, ``ace_v2``),
      from ``zoo_ace`` (empty when not given), without the names that are baselines of the
      study (those are drawn as the baseline with the study's one ACE v2, never twice);
    * ``stopped``: trials stopped at a rung of successive halving (``number``, ``accuracy`` at
      that rung, ``ace_v2``, ``epochs``, ``reason``; baselines excluded): drawn apart;
    * ``baselines``: every zoo baseline of the study that has an ACE v2 and did not complete
      (``name``, ``number``, ``accuracy`` (at its last rung; NaN when it has none),
      ``ace_v2``, ``state``: ``stopped after N epochs``, ``over budget``, ``running``,
      ``failed``): always drawn and named, beside the completed ones in ``points``;
    * ``log_x``: whether the ACE axis starts logarithmic (ACE v2 spans orders of magnitude;
      linear when every cost lies within a factor of :data:`_LOG_AXIS_RATIO`); the page can
      switch it.
    """
    done = _completed(frame)
    share = done["elementwise_share"].to_numpy(float)
    ace = done["ace_v2"].to_numpy(float)
    points = pd.DataFrame(
        {
            "number": done["number"].astype(int),
            "accuracy": done["accuracy"].astype(float),
            "ace_v2": ace,
            "ace_v1": done["ace_v1"].astype(float),
            "mac_cost": ace * (1.0 - share),
            "elementwise_cost": ace * share,
            "on_front": pareto_mask(done["accuracy"].to_numpy(float), ace),
            "baseline": done["baseline"].fillna("").astype(str),
            "status": done["status"].fillna("").astype(str),
            "archid": done["archid"].fillna("").astype(str),
            "layer_bits": done["layer_bits"].fillna("").astype(str),
            "summary": [_summary(row) for _, row in done.iterrows()],
        }
    )
    front = (
        points.loc[points["on_front"], ["number", "accuracy", "ace_v2"]]
        .sort_values(["ace_v2", "accuracy", "number"])
        .reset_index(drop=True)
    )
    zoo = pd.DataFrame(
        {"name": list((zoo_ace or {}).keys()), "ace_v2": list((zoo_ace or {}).values())},
        columns=["name", "ace_v2"],
    ).astype({"name": str, "ace_v2": float})
    is_baseline = frame["baseline"].fillna("").astype(str) != ""
    baselines = _unfinished_baselines(frame[is_baseline & (frame["state"] != "COMPLETE")])
    named = set(frame.loc[is_baseline, "baseline"].astype(str))
    zoo = zoo[~zoo["name"].isin(named)].reset_index(drop=True)
    halted = frame[(frame["status"] == "stopped") & frame["rung_accuracy"].notna() & ~is_baseline]
    stopped = pd.DataFrame(
        {
            "number": halted["number"].astype(int),
            "accuracy": halted["rung_accuracy"].astype(float),
            "ace_v2": halted["ace_v2"].astype(float),
            "epochs": halted["rung_epochs"].astype(int),
            "reason": halted["reason"].fillna("").astype(str),
        }
    ).reset_index(drop=True)
    costs = np.concatenate(
        [
            ace,
            zoo["ace_v2"].to_numpy(float),
            stopped["ace_v2"].to_numpy(float),
            baselines["ace_v2"].to_numpy(float),
        ]
    )
    costs = costs[np.isfinite(costs) & (costs > 0)]
    log_x = bool(not costs.size or costs.max() / costs.min() > _LOG_AXIS_RATIO)
    return {
        "points": points,
        "front": front,
        "zoo": zoo,
        "stopped": stopped,
        "baselines": baselines,
        "log_x": log_x,
    }


def _unfinished_baselines(rows: pd.DataFrame) -> pd.DataFrame:
    """The baseline rows that did not complete, with what became of them (see
    :func:`pareto_scatter_data`)."""
    rows = rows[np.isfinite(rows["ace_v2"].to_numpy(float))]
    states = []
    for row in rows.itertuples(index=False):
        if row.status == "stopped" and not pd.isna(row.rung_epochs):
            states.append(f"stopped after {int(row.rung_epochs)} epochs")
        elif row.status == "over_budget":
            states.append("over budget")
        elif row.state == "RUNNING":
            states.append("running")
        else:
            states.append("failed")
    return pd.DataFrame(
        {
            "name": rows["baseline"].astype(str).to_numpy(),
            "number": rows["number"].astype(int).to_numpy(),
            "accuracy": rows["rung_accuracy"].astype(float).to_numpy(),
            "ace_v2": rows["ace_v2"].astype(float).to_numpy(),
            "state": states,
        },
        columns=["name", "number", "accuracy", "ace_v2", "state"],
    )


def rungs_data(frame: pd.DataFrame) -> dict[str, Any]:
    """Rung results of successive halving: ``rungs`` with one row per (trial, rung) —
    ``number``, ``epochs``, ``accuracy`` (validation accuracy at that rung), ``outcome``
    (``complete``: reached the top rung; ``stopped``; ``running``; ``failed``) — and
    ``counts``: trials per outcome. Empty for a study without successive halving."""
    outcome_of = {"COMPLETE": "complete", "RUNNING": "running", "FAIL": "failed"}
    rows = []
    for row in frame.itertuples(index=False):
        rungs = row.rungs if isinstance(row.rungs, list) else []
        outcome = "stopped" if row.status == "stopped" else outcome_of.get(row.state, "failed")
        for rung in rungs:
            accuracy = float(rung["val_accuracy"])
            rows.append((int(row.number), int(rung["epochs"]), accuracy, outcome))
    table = pd.DataFrame(rows, columns=["number", "epochs", "accuracy", "outcome"])
    counts = table.drop_duplicates("number")["outcome"].value_counts().to_dict()
    return {"rungs": table, "counts": {str(k): int(v) for k, v in counts.items()}}


def hypervolume_data(
    frame: pd.DataFrame, reference: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Hypervolume after each completed trial (see :func:`results.pareto.hypervolume_history`):
    ``history`` (``number``, ``hypervolume``, ``normalized``, ``front_size``) and ``reference``.
    """
    history = hypervolume_history(_completed(frame), reference)
    return {"history": history, "reference": history.attrs["reference"]}


def _layer_order(name: str) -> tuple[int, int, int]:
    """Forward order of the layer names of :func:`results.layers.layer_bits`."""
    if name.startswith("stem"):
        return (0, 0, int(name[-1]) if name[-1].isdigit() else 0)
    if name == "head":
        return (2, 0, 0)
    match = re.fullmatch(r"b(\d+)\.(dw|pw|conv(\d))", name)
    if match is None:
        return (1, 10**6, 0)
    part = {"dw": 0, "pw": 1}.get(match.group(2), int(match.group(3) or 0))
    return (1, int(match.group(1)), part)


def bits_heatmap_data(frame: pd.DataFrame) -> dict[str, Any]:
    """Per-layer bit-widths of the front (rows: one per front architecture by ACE v2, see
    :func:`results.front.front_table`; columns: layers).

    Returns ``rows`` (trial numbers), ``row_labels``, ``layers`` (column names in forward
    order, the union over the front), ``weight_bits`` and ``activation_bits`` (float arrays
    ``(rows, layers)``, NaN where an architecture has no such layer) and ``text`` (``"w/a"``
    per cell, ``""`` where absent).
    """
    members = front_table(frame)["number"]  # one row per architecture
    front = frame[frame["number"].isin(members)].sort_values(["ace_v2", "number"])
    per_row: list[dict[str, tuple[int, int]]] = []
    numbers: list[int] = []
    labels: list[str] = []
    for _, row in front.iterrows():
        try:
            arch = trial_arch(row)
        except ArchConfigError:
            arch = None
        if arch is None:
            continue
        per_row.append({lb.layer: (lb.weight_bits, lb.activation_bits) for lb in layer_bits(arch)})
        numbers.append(int(row["number"]))
        name = f" {row['baseline']}" if isinstance(row["baseline"], str) and row["baseline"] else ""
        labels.append(f"#{int(row['number'])}{name} ({100 * row['accuracy']:.1f}%)")
    layers = sorted({name for bits in per_row for name in bits}, key=_layer_order)
    weight = np.full((len(per_row), len(layers)), np.nan)
    activation = np.full_like(weight, np.nan)
    text = [["" for _ in layers] for _ in per_row]
    for i, bits in enumerate(per_row):
        for j, name in enumerate(layers):
            if name in bits:
                weight[i, j], activation[i, j] = bits[name]
                text[i][j] = f"{bits[name][0]}/{bits[name][1]}"
    return {
        "rows": numbers,
        "row_labels": labels,
        "layers": layers,
        "weight_bits": weight,
        "activation_bits": activation,
        "text": text,
    }


def _block_of(layer: str) -> str:
    """``blocks.3.pointwise_stage`` -> ``blocks.3``; ``stem.conv`` -> ``stem``."""
    parts = layer.split(".")
    return ".".join(parts[:2]) if parts[0] == "blocks" and len(parts) > 1 else parts[0]


def ace_breakdown_data(report: Mapping[str, Any] | Any, by: str = "block") -> pd.DataFrame:
    """ACE v2 per layer split into MAC and elementwise cost, from an ACE report.

    ``report``: an :class:`evaluators.ace.AceReport` or its ``to_dict()``; its ``breakdown``
    rows (``layer``, ``op``, ``cost``) are summed per layer: ``op == "mac"`` is MAC cost,
    every other op kind elementwise cost. ``by="block"`` sums the modules of one block
    (``blocks.3.*`` -> ``blocks.3``, ``stem.*`` -> ``stem``, ``head.*`` -> ``head``);
    ``by="module"`` keeps the report's module paths. Returns columns ``layer``, ``mac_cost``,
    ``elementwise_cost``, ``total`` in the report's order.
    """
    if by not in ("block", "module"):
        raise ValueError(f"by={by!r}; use 'block' or 'module'")
    data = report.to_dict() if hasattr(report, "to_dict") else report
    rows = pd.DataFrame(list(data["breakdown"]), columns=None)
    if rows.empty:
        return pd.DataFrame(columns=["layer", "mac_cost", "elementwise_cost", "total"])
    if by == "block":
        rows["layer"] = [_block_of(str(layer)) for layer in rows["layer"]]
    is_mac = rows["op"] == "mac"
    rows = rows.assign(
        mac_cost=np.where(is_mac, rows["cost"].astype(float), 0.0),
        elementwise_cost=np.where(is_mac, 0.0, rows["cost"].astype(float)),
    )
    order = list(dict.fromkeys(rows["layer"]))
    table = rows.groupby("layer", sort=False)[["mac_cost", "elementwise_cost"]].sum()
    table = table.reindex(order).reset_index()
    table["total"] = table["mac_cost"] + table["elementwise_cost"]
    return table


def proxy_final_data(frame: pd.DataFrame) -> dict[str, Any]:
    """Proxy vs final accuracy of the fully trained trials.

    Returns ``points`` (``number``, ``accuracy``, ``final_accuracy``, ``ace_v2``), ``tau``
    (Kendall tau-b between proxy and final accuracy; NaN with fewer than
    :data:`MIN_TAU_POINTS` trained trials: a rank correlation of 3 points says nothing),
    ``range`` (``[low, high]`` accuracy shared by both axes: the data padded by 10 % of its
    span, at least 1 point of accuracy; ``[0, 1]`` without data).
    """
    done = _completed(frame)
    trained = done[np.isfinite(done["final_accuracy"].to_numpy(float))]
    points = pd.DataFrame(
        {
            "number": trained["number"].astype(int),
            "accuracy": trained["accuracy"].astype(float),
            "final_accuracy": trained["final_accuracy"].astype(float),
            "ace_v2": trained["ace_v2"].astype(float),
        }
    ).reset_index(drop=True)
    enough = len(points) >= MIN_TAU_POINTS
    tau = kendall_tau(points["accuracy"], points["final_accuracy"]) if enough else math.nan
    values = np.concatenate([points["accuracy"], points["final_accuracy"]]).astype(float)
    if values.size:
        low, high = float(values.min()), float(values.max())
        pad = max(0.1 * (high - low), 0.005)
        axis = [max(0.0, low - pad), min(1.0, high + pad)]
    else:
        axis = [0.0, 1.0]
    return {"points": points, "tau": tau, "range": axis}
