"""The Pareto front of a study as a set of architectures: a table, records (JSON),
``OUT/front.csv``, and the verdict on each zoo baseline.

One row per architecture (``archid``): of the trials that share an architecture on the front
the one :func:`results.pareto.best_per_archid` picks (the fully trained one, then the most
accurate); ``same_archid`` lists the others. Accuracy is a fraction in [0, 1]; ACE v1 / v2 are
in the study's cost unit (bit-ops for the default table).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from pikenas.evaluators._atomic import atomic_write
from pikenas.results.pareto import best_per_archid, pareto_front
from pikenas.results.trials import load
from pikenas.space.errors import RunDirError

__all__ = [
    "BITS_LEGEND",
    "FRONT_COLUMNS",
    "FRONT_CSV",
    "VERDICT_COLUMNS",
    "baseline_verdicts",
    "filter_front",
    "front_records",
    "front_table",
    "verdict_line",
    "write_front_csv",
]

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
    "matches",
    "same_archid",
    "status",
)
#: what the ``layer_bits`` column holds (printed under every table that shows it).
BITS_LEGEND = (
    "bits: weight/input-activation bits of each MAC layer, stem first, head last "
    "(4/8 = 4-bit weights on 8-bit inputs; 32 = float)"
)
#: columns of :func:`baseline_verdicts`.
VERDICT_COLUMNS = (
    "baseline",
    "baseline_number",
    "baseline_accuracy",
    "baseline_ace_v2",
    "member_number",
    "member_accuracy",
    "member_ace_v2",
    "ratio",
)


def _architectures(frame: pd.DataFrame) -> pd.DataFrame:
    """COMPLETE rows with finite objectives, one per architecture (best_per_archid)."""
    done = frame[frame["state"] == "COMPLETE"] if "state" in frame.columns else frame
    finite = np.isfinite(done["accuracy"].to_numpy(float)) & np.isfinite(
        done["ace_v2"].to_numpy(float)
    )
    return best_per_archid(done[finite])


def baseline_verdicts(frame: pd.DataFrame) -> pd.DataFrame:
    """For each zoo baseline of the study (rows with a ``baseline`` name that reached a
    result), the cheapest searched architecture (not a baseline) with at least its accuracy
    and the ACE v2 ratio ``baseline_ace_v2 / member_ace_v2`` (> 1: the member is cheaper).

    Accuracy: the proxy accuracy of COMPLETE trials (what the front is made of); a baseline
    stopped at a rung is compared at its rung accuracy. ``member_*`` and ``ratio`` are NaN
    when no searched architecture reaches the baseline's accuracy. Columns
    :data:`VERDICT_COLUMNS`, one row per baseline name, sorted by baseline ACE v2.
    """
    names = frame["baseline"].fillna("").astype(str)
    searched = _architectures(frame[names == ""])
    rows = []
    for name, group in frame[names != ""].groupby(names[names != ""], sort=False):
        accuracy = group["accuracy"].where(group["accuracy"].notna(), group["rung_accuracy"])
        group = group.assign(_accuracy=accuracy).dropna(subset=["_accuracy", "ace_v2"])
        if group.empty:
            continue
        best = group.sort_values(["_accuracy", "number"], ascending=[False, True]).iloc[0]
        good = searched[searched["accuracy"] >= best["_accuracy"]]
        member = good.sort_values(["ace_v2", "accuracy", "number"], ascending=[True, False, True])
        found = member.iloc[0] if len(member) else None
        rows.append(
            {
                "baseline": str(name),
                "baseline_number": int(best["number"]),
                "baseline_accuracy": float(best["_accuracy"]),
                "baseline_ace_v2": float(best["ace_v2"]),
                "member_number": int(found["number"]) if found is not None else pd.NA,
                "member_accuracy": float(found["accuracy"]) if found is not None else math.nan,
                "member_ace_v2": float(found["ace_v2"]) if found is not None else math.nan,
                "ratio": float(best["ace_v2"]) / float(found["ace_v2"])
                if found is not None and found["ace_v2"] > 0
                else math.nan,
            }
        )
    table = pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))
    table["member_number"] = table["member_number"].astype("Int64")
    return table.sort_values("baseline_ace_v2", ignore_index=True)


def _ratio_text(ratio: float) -> str:
    """``3.1x lower`` (ratio >= 1) or ``2.0x higher``."""
    return f"{ratio:.1f}x lower" if ratio >= 1 else f"{1 / ratio:.1f}x higher"


def verdict_line(verdict: pd.Series | dict[str, Any], unit: str = "ACE v2") -> str:
    """One sentence per baseline, e.g. ``"trial 12 (99.0 %) matches tiny-w8a8's 98.9 % at 3.1x
    lower ACE v2 (2,345 vs 7,270)"``."""
    name = verdict["baseline"]
    accuracy = 100 * verdict["baseline_accuracy"]
    if pd.isna(verdict["member_number"]):
        return f"no searched architecture reaches {name}'s {accuracy:.1f} % yet"
    member = f"trial {int(verdict['member_number'])} ({100 * verdict['member_accuracy']:.1f} %)"
    costs = f"({verdict['member_ace_v2']:,.0f} vs {verdict['baseline_ace_v2']:,.0f})"
    if verdict["ratio"] < 1:  # reaching the accuracy costs more: no saving to claim
        return (
            f"no cheaper searched architecture reaches {name}'s {accuracy:.1f} %: the cheapest "
            f"that does, {member}, costs {_ratio_text(verdict['ratio'])} {unit} {costs}"
        )
    ratio = _ratio_text(verdict["ratio"])
    return f"{member} matches {name}'s {accuracy:.1f} % at {ratio} {unit} {costs}"


def front_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The front of a trials frame (from :func:`results.trials.load`) as a set of
    architectures: :data:`FRONT_COLUMNS`, one row per archid, sorted by ACE v2 ascending (so
    accuracy ascends too), ties by trial number. ``matches``: the baselines this row is the
    verdict for (``"tiny-w8a8 at 3.1x lower ACE v2"``, see :func:`baseline_verdicts`);
    ``same_archid``: the other COMPLETE trials of this architecture (``"223 240"``).
    """
    on_front = pareto_front(frame)
    done = frame[frame["state"] == "COMPLETE"] if "state" in frame.columns else frame
    # the architectures on the front, each represented by its best-trained COMPLETE trial
    siblings = done[done["archid"].isin(on_front["archid"].dropna())]
    front = best_per_archid(pd.concat([on_front[on_front["archid"].isna()], siblings]))
    numbers = done.groupby(done["archid"].astype(object))["number"].apply(
        lambda column: sorted(int(n) for n in column)
    )
    same = [
        " ".join(
            str(n) for n in (numbers.get(archid, []) if isinstance(archid, str) else []) if n != own
        )
        for archid, own in zip(front["archid"], front["number"], strict=True)
    ]
    verdicts = baseline_verdicts(frame)
    matches: dict[int, list[str]] = {}
    for row in verdicts.dropna(subset=["member_number"]).itertuples(index=False):
        if row.ratio < 1:  # costs more than the baseline: not a match worth a column
            continue
        matches.setdefault(int(row.member_number), []).append(
            f"{row.baseline} at {_ratio_text(row.ratio)} ACE v2"
        )
    front = front.assign(
        same_archid=same,
        matches=[", ".join(matches.get(int(n), [])) for n in front["number"]],
    )
    keys = ["ace_v2", "number"]
    return front.sort_values(keys).loc[:, list(FRONT_COLUMNS)].reset_index(drop=True)


def filter_front(
    table: pd.DataFrame, *, min_accuracy: float | None = None, max_ace: float | None = None
) -> pd.DataFrame:
    """Rows of a front table with proxy ``accuracy >= min_accuracy`` (a fraction) and
    ``ace_v2 <= max_ace`` (cost units); ``None`` keeps all."""
    keep = np.ones(len(table), dtype=bool)
    if min_accuracy is not None:
        keep &= table["accuracy"].to_numpy(float) >= min_accuracy
    if max_ace is not None:
        keep &= table["ace_v2"].to_numpy(float) <= max_ace
    return table[keep].reset_index(drop=True)


def _json_ready(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value.item() if hasattr(value, "item") else value  # numpy scalar -> Python scalar


def front_records(
    frame: pd.DataFrame | None = None, *, table: pd.DataFrame | None = None
) -> list[dict[str, Any]]:
    """The front (of ``frame``, or an already made ``table``) as JSON-ready dicts; missing
    values are ``None``."""
    if table is None:
        table = front_table(frame)
    return [
        {key: _json_ready(value) for key, value in row.items()}
        for row in table.to_dict(orient="records")
    ]


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
