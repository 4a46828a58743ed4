"""Exact 2-D Pareto front and hypervolume for (maximize accuracy, minimize ACE v2).

Dominance: point ``p`` dominates ``q`` when ``p.accuracy >= q.accuracy`` and
``p.ace_v2 <= q.ace_v2`` with at least one strict inequality. The front is the set of points
no other point dominates. **Ties**: points with equal objective vectors do not dominate each
other, so all of them are kept (a duplicate architecture scored twice appears twice); this is
also what ``optuna.Study.best_trials`` returns. Points with a NaN or infinite objective are
never on the front.

Hypervolume: the area (accuracy x ACE) of the region dominated by the front and bounded by a
reference point ``(ref_accuracy, ref_ace_v2)``. Default reference point (:func:`reference_point`):
accuracy 0 and ``1.1 x`` the largest finite ACE v2 seen, so every finite point contributes.
Points at or beyond the reference (accuracy <= ref, ace_v2 >= ref) contribute nothing.
The normalized hypervolume divides by the area of the box between the reference point and the
ideal point (accuracy 1, ACE v2 0): ``(1 - ref_accuracy) * ref_ace_v2``.

Ranking (successive halving's promotions, :func:`promotion_order`): non-dominated sorting peels
fronts off one after the other (front 0 is the Pareto front); within a front the points that
keep the front spread out come first (crowding distance in accuracy and log10 ACE v2, each
scaled to its range over the whole set; the two ends of a front are infinitely far).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "REFERENCE_ACE_FACTOR",
    "pareto_mask",
    "pareto_front",
    "pareto_ranks",
    "crowding_distance",
    "promotion_order",
    "best_per_archid",
    "reference_point",
    "hypervolume",
    "hypervolume_history",
]

#: default reference ACE v2 = this factor x the largest ACE v2 seen.
REFERENCE_ACE_FACTOR = 1.1


def _points(accuracy: Sequence[float] | np.ndarray, ace_v2: Sequence[float] | np.ndarray):
    acc = np.asarray(accuracy, dtype=float).reshape(-1)
    ace = np.asarray(ace_v2, dtype=float).reshape(-1)
    if acc.shape != ace.shape:
        raise ValueError(f"accuracy has {acc.size} values but ace_v2 has {ace.size}")
    return acc, ace


def pareto_mask(
    accuracy: Sequence[float] | np.ndarray, ace_v2: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Boolean mask ``(n,)`` of the non-dominated points (ties all kept), O(n log n).

    Sort by ACE v2 ascending, accuracy descending; sweep keeping the best accuracy seen. A point
    is on the front when its accuracy beats every point of strictly lower ACE v2 and equals the
    best accuracy among points of the same ACE v2.
    """
    acc, ace = _points(accuracy, ace_v2)
    mask = np.zeros(acc.size, dtype=bool)
    finite = np.flatnonzero(np.isfinite(acc) & np.isfinite(ace))
    if finite.size == 0:
        return mask
    order = finite[np.lexsort((-acc[finite], ace[finite]))]
    sorted_acc, sorted_ace = acc[order], ace[order]
    # groups of equal ACE v2; the first member of a group holds its best accuracy
    starts = np.flatnonzero(np.r_[True, sorted_ace[1:] != sorted_ace[:-1]])
    group_of = np.cumsum(np.r_[True, sorted_ace[1:] != sorted_ace[:-1]]) - 1
    group_best = sorted_acc[starts]
    best_before = np.r_[-np.inf, np.maximum.accumulate(group_best)[:-1]]
    on_front = (sorted_acc == group_best[group_of]) & (group_best[group_of] > best_before[group_of])
    mask[order[on_front]] = True
    return mask


def pareto_ranks(
    accuracy: Sequence[float] | np.ndarray, ace_v2: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Non-dominated sorting: ``(n,)`` int, 0 for the front, 1 for the front of the rest, ...;
    points with a NaN or infinite objective get the rank after the last front."""
    acc, ace = _points(accuracy, ace_v2)
    ranks = np.full(acc.size, -1, dtype=int)
    left = np.flatnonzero(np.isfinite(acc) & np.isfinite(ace))
    rank = 0
    while left.size:
        mask = pareto_mask(acc[left], ace[left])
        ranks[left[mask]] = rank
        left = left[~mask]
        rank += 1
    ranks[ranks < 0] = rank
    return ranks


def crowding_distance(
    accuracy: Sequence[float] | np.ndarray,
    ace_v2: Sequence[float] | np.ndarray,
    scale: tuple[float, float] | None = None,
) -> np.ndarray:
    """NSGA-II's crowding distance ``(n,)`` of points on one front, in accuracy and log10
    ACE v2, each divided by ``scale`` (default: its range over these points): the side lengths
    of the box between a point's two neighbours; the two ends get ``inf``."""
    acc, ace = _points(accuracy, ace_v2)
    log_ace = np.log10(np.maximum(ace, 1e-300))
    if scale is None:
        scale = (float(np.ptp(acc)), float(np.ptp(log_ace))) if acc.size else (0.0, 0.0)
    distance = np.zeros(acc.size)
    if acc.size <= 2:
        return np.full(acc.size, np.inf)
    order = np.lexsort((-acc, log_ace))
    distance[order[[0, -1]]] = np.inf
    for values, span in ((acc, scale[0]), (log_ace, scale[1])):
        if span > 0:
            gaps = np.abs(values[order[2:]] - values[order[:-2]]) / span
            distance[order[1:-1]] += gaps
    return distance


def promotion_order(
    accuracy: Sequence[float] | np.ndarray, ace_v2: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Indices of the points best first: by non-dominated rank, then (within a front) larger
    crowding distance, then lower ACE v2, then lower index."""
    acc, ace = _points(accuracy, ace_v2)
    ranks = pareto_ranks(acc, ace)
    finite = np.isfinite(acc) & np.isfinite(ace)
    log_ace = np.log10(np.maximum(ace[finite], 1e-300))
    scale = (
        float(np.ptp(acc[finite])) if finite.any() else 0.0,
        float(np.ptp(log_ace)) if finite.any() else 0.0,
    )
    crowding = np.zeros(acc.size)
    for rank in np.unique(ranks[finite]):
        members = np.flatnonzero(finite & (ranks == rank))
        crowding[members] = crowding_distance(acc[members], ace[members], scale)
    return np.lexsort((np.arange(acc.size), np.nan_to_num(ace, nan=np.inf), -crowding, ranks))


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` (columns ``accuracy``, ``ace_v2``, optionally ``state``) on the
    front, sorted by ACE v2 ascending then ``number``. Only ``COMPLETE`` rows count when a
    ``state`` column is present.
    """
    candidates = frame
    if "state" in frame.columns:
        candidates = frame[frame["state"] == "COMPLETE"]
    mask = pareto_mask(candidates["accuracy"].to_numpy(float), candidates["ace_v2"].to_numpy(float))
    front = candidates[mask]
    keys = ["ace_v2", "number"] if "number" in front.columns else ["ace_v2"]
    return front.sort_values(keys, ignore_index=True)


def best_per_archid(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per ``archid`` (rows without one are all kept), in the input order: of rows with
    the same architecture the fully trained one (``final_dir``), then the most accurate, the
    cheapest, the lowest trial number. The one rule for "which trial stands for this
    architecture" (full training of the winners, export bundles).
    """
    if rows.empty:
        return rows
    final_dir = rows["final_dir"] if "final_dir" in rows.columns else pd.Series("", rows.index)
    archid = rows["archid"].astype(object)
    ranked = rows.assign(
        _key=archid.where(archid.notna(), [f"#row{index}" for index in rows.index]),
        _untrained=final_dir.fillna("").astype(str) == "",
    ).sort_values(
        ["_untrained", "accuracy", "ace_v2", "number"], ascending=[True, False, True, True]
    )
    kept = ranked.drop_duplicates("_key", keep="first").index
    return rows.loc[rows.index.isin(kept)]


def reference_point(
    ace_v2: Sequence[float] | np.ndarray, ref_accuracy: float = 0.0
) -> tuple[float, float]:
    """Default reference ``(ref_accuracy, 1.1 x max finite ace_v2)``; ``(0, 1)`` when no ACE v2
    is finite (an empty study), so that hypervolumes are 0 rather than undefined.
    """
    ace = np.asarray(ace_v2, dtype=float)
    ace = ace[np.isfinite(ace)]
    worst = float(ace.max()) if ace.size else 0.0
    return (float(ref_accuracy), REFERENCE_ACE_FACTOR * worst if worst > 0 else 1.0)


def hypervolume(
    accuracy: Sequence[float] | np.ndarray,
    ace_v2: Sequence[float] | np.ndarray,
    reference: tuple[float, float] | None = None,
) -> float:
    """Exact hypervolume (accuracy x ACE) of the points w.r.t. ``reference`` (default:
    :func:`reference_point` of these points). O(n log n).
    """
    acc, ace = _points(accuracy, ace_v2)
    ref_acc, ref_ace = reference if reference is not None else reference_point(ace)
    keep = np.isfinite(acc) & np.isfinite(ace) & (acc > ref_acc) & (ace < ref_ace)
    acc, ace = acc[keep], ace[keep]
    if acc.size == 0:
        return 0.0
    mask = pareto_mask(acc, ace)
    acc, ace = acc[mask], ace[mask]
    order = np.lexsort((-acc, ace))  # ACE ascending -> accuracy ascending along the front
    acc, ace = acc[order], ace[order]
    # Strips between consecutive front ACE values: each front point owns the strip
    # [ace_i, ace_{i+1}) with height acc_i - ref (the best accuracy reachable at that cost).
    right = np.append(ace[1:], ref_ace)
    return float(np.sum((right - ace) * (acc - ref_acc)))


def hypervolume_history(
    frame: pd.DataFrame, reference: tuple[float, float] | None = None
) -> pd.DataFrame:
    """Hypervolume after each completed trial, in trial-number order.

    ``frame``: columns ``number``, ``state``, ``accuracy``, ``ace_v2`` (as from
    :func:`results.trials.load`). The reference point is fixed for the whole history (default:
    :func:`reference_point` over all completed trials), so the curve never decreases.
    Returns columns ``number``, ``hypervolume`` (accuracy x ACE), ``normalized`` (in [0, 1]),
    ``front_size``; ``attrs["reference"]`` holds the reference point.
    """
    done = frame[frame["state"] == "COMPLETE"].sort_values("number")
    acc = done["accuracy"].to_numpy(float)
    ace = done["ace_v2"].to_numpy(float)
    ref = reference if reference is not None else reference_point(ace)
    box = (1.0 - ref[0]) * ref[1]
    volumes, sizes = [], []
    front_acc, front_ace = np.empty(0), np.empty(0)
    volume = 0.0
    for point_acc, point_ace in zip(acc, ace, strict=True):
        cand_acc = np.append(front_acc, point_acc)
        cand_ace = np.append(front_ace, point_ace)
        mask = pareto_mask(cand_acc, cand_ace)
        if mask[-1]:  # the new point is on the front (it may push others off)
            front_acc, front_ace = cand_acc[mask], cand_ace[mask]
            volume = hypervolume(front_acc, front_ace, ref)
        volumes.append(volume)
        sizes.append(int(front_acc.size))
    history = pd.DataFrame(
        {
            "number": done["number"].to_numpy(),
            "hypervolume": np.asarray(volumes, dtype=float),
            "normalized": np.asarray(volumes, dtype=float) / box if box > 0 else np.nan,
            "front_size": np.asarray(sizes, dtype=int),
        }
    )
    history.attrs["reference"] = ref
    return history
