from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pikenas.results.pareto import (
    hypervolume,
    hypervolume_history,
    pareto_front,
    pareto_mask,
    reference_point,
)


def brute_force_mask(acc, ace):
    n = len(acc)
    mask = []
    for i in range(n):
        if not (np.isfinite(acc[i]) and np.isfinite(ace[i])):
            mask.append(False)
            continue
        dominated = any(
            np.isfinite(acc[j])
            and np.isfinite(ace[j])
            and acc[j] >= acc[i]
            and ace[j] <= ace[i]
            and (acc[j] > acc[i] or ace[j] < ace[i])
            for j in range(n)
        )
        mask.append(not dominated)
    return np.array(mask, dtype=bool)


def brute_force_hypervolume(acc, ace, ref):
    """Area of the union of boxes [ref_acc, acc_i] x [ace_i, ref_ace] on the compressed grid."""
    ref_acc, ref_ace = ref
    boxes = [(a, c) for a, c in zip(acc, ace, strict=True) if a > ref_acc and c < ref_ace]
    xs = sorted({ref_acc, *[a for a, _ in boxes]})
    ys = sorted({ref_ace, *[c for _, c in boxes]})
    area = 0.0
    for (x0, x1), (y0, y1) in itertools.product(itertools.pairwise(xs), itertools.pairwise(ys)):
        mid_x, mid_y = (x0 + x1) / 2, (y0 + y1) / 2
        if any(mid_x <= a and mid_y >= c for a, c in boxes):
            area += (x1 - x0) * (y1 - y0)
    return area


# few distinct values, so that ties and duplicates are frequent
values = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
costs = st.sampled_from([1.0, 2.0, 3.0, 5.0, 8.0, 13.0])
point_sets = st.lists(st.tuples(values, costs), max_size=25)


@settings(max_examples=200, deadline=None)
@given(point_sets)
def test_mask_matches_brute_force(points):
    acc = np.array([p[0] for p in points], dtype=float)
    ace = np.array([p[1] for p in points], dtype=float)
    assert pareto_mask(acc, ace).tolist() == brute_force_mask(acc, ace).tolist()


@settings(max_examples=200, deadline=None)
@given(point_sets, st.sampled_from([0.0, 0.3]), st.sampled_from([6.0, 20.0]))
def test_hypervolume_matches_brute_force(points, ref_acc, ref_ace):
    acc = [p[0] for p in points]
    ace = [p[1] for p in points]
    expected = brute_force_hypervolume(acc, ace, (ref_acc, ref_ace))
    assert hypervolume(acc, ace, (ref_acc, ref_ace)) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(1, 1e9)), min_size=1, max_size=30))
def test_history_is_monotone_and_ends_at_full_hypervolume(points):
    frame = pd.DataFrame(
        {
            "number": range(len(points)),
            "state": "COMPLETE",
            "accuracy": [p[0] for p in points],
            "ace_v2": [p[1] for p in points],
        }
    )
    history = hypervolume_history(frame)
    assert np.all(np.diff(history["hypervolume"]) >= -1e-9 * history["hypervolume"].max())
    ref = history.attrs["reference"]
    assert history["hypervolume"].iloc[-1] == pytest.approx(
        hypervolume(frame["accuracy"], frame["ace_v2"], ref)
    )
    assert ((history["normalized"] >= 0) & (history["normalized"] <= 1 + 1e-12)).all()


def test_ties_are_all_kept_and_nan_never_on_front():
    acc = [0.5, 0.5, 0.9, np.nan, 0.9, 0.2]
    ace = [1.0, 1.0, 3.0, 0.1, np.inf, 0.5]
    assert pareto_mask(acc, ace).tolist() == [True, True, True, False, False, True]


def test_hand_computed_hypervolume():
    # front (0.5, 100), (0.8, 300); ref (0, 1000): 0.5*(300-100) + 0.8*(1000-300) = 660
    assert hypervolume([0.5, 0.8, 0.4], [100, 300, 400], (0.0, 1000.0)) == pytest.approx(660.0)
    # default reference: ace 1.1 * 400 = 440 -> 0.5*200 + 0.8*140 = 212
    assert reference_point([100, 300, 400]) == (0.0, pytest.approx(440.0))
    assert hypervolume([0.5, 0.8, 0.4], [100, 300, 400]) == pytest.approx(212.0)
    assert hypervolume([], []) == 0.0
    with pytest.raises(ValueError, match="2 values"):
        pareto_mask([1.0, 2.0], [1.0])


def test_front_uses_only_complete_rows_sorted_by_cost():
    frame = pd.DataFrame(
        {
            "number": [0, 1, 2, 3],
            "state": ["COMPLETE", "PRUNED", "COMPLETE", "COMPLETE"],
            "accuracy": [0.9, 1.0, 0.5, 0.4],
            "ace_v2": [50.0, 1.0, 10.0, 20.0],
        }
    )
    assert pareto_front(frame)["number"].tolist() == [2, 0]


def test_history_hand_computed():
    frame = pd.DataFrame(
        {
            "number": [0, 1, 2, 3],
            "state": ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"],
            "accuracy": [0.5, np.nan, 0.4, 0.8],
            "ace_v2": [100.0, np.nan, 200.0, 300.0],
        }
    )
    history = hypervolume_history(frame, reference=(0.0, 1000.0))
    assert history["number"].tolist() == [0, 2, 3]
    assert history["hypervolume"].tolist() == pytest.approx([450.0, 450.0, 660.0])
    assert history["front_size"].tolist() == [1, 1, 2]
    assert history["normalized"].iloc[-1] == pytest.approx(0.66)
