"""Trials of successive halving in the results tools: stopped trials keep their rung results and
are shown apart from the completed ones (``results.load``, figures, dashboard, ``front``)."""

from __future__ import annotations

import math

from pikenas.results.dashboard import dashboard_data
from pikenas.results.figure_data import pareto_scatter_data, rungs_data
from pikenas.results.figures import STOPPED_META, rungs_figure
from pikenas.results.front import front_table
from pikenas.results.trials import load
from tests.results_tests._studies import Point, make_run


def rung(epochs: int, accuracy: float, decision: str) -> dict:
    return {"epochs": epochs, "val_accuracy": accuracy, "val_loss": 1.0, "decision": decision}


COMPLETE = [rung(1, 0.5, "promoted"), rung(3, 0.8, "promoted"), rung(9, 0.9, "top")]
POINTS = [
    Point(0.9, 300.0, attrs={"rungs": COMPLETE}),
    Point(
        0.0, 100.0, state="PRUNED", bits=((2, 2),),
        attrs={"status": "stopped", "reason": "does not learn: 10.0 %",
               "rungs": [rung(1, 0.1, "stopped")]},
    ),
    Point(
        0.0, 200.0, state="PRUNED", bits=((4, 2),),
        attrs={"status": "stopped", "reason": "rung 3 epochs: Pareto place 3 of 3",
               "rungs": [rung(1, 0.4, "promoted"), rung(3, 0.6, "stopped")]},
    ),
]  # fmt: skip


def test_load_gives_every_trial_its_rungs(tmp_path) -> None:
    make_run(tmp_path, POINTS)
    frame = load(tmp_path)
    assert list(frame["rung_epochs"]) == [9, 1, 3]
    assert list(frame["rung_accuracy"]) == [0.9, 0.1, 0.6]
    assert [len(r) for r in frame["rungs"]] == [3, 1, 2]
    assert list(frame["status"]) == ["ok", "stopped", "stopped"]
    assert math.isnan(frame.loc[1, "accuracy"])  # no values: not on the front
    assert list(front_table(frame)["number"]) == [0]


def test_figures_draw_stopped_trials_apart(tmp_path) -> None:
    make_run(tmp_path, POINTS)
    frame = load(tmp_path)
    scatter = pareto_scatter_data(frame)
    assert list(scatter["points"]["number"]) == [0]
    assert list(scatter["stopped"]["number"]) == [1, 2]
    assert list(scatter["stopped"]["epochs"]) == [1, 3]
    data = rungs_data(frame)
    assert data["counts"] == {"complete": 1, "stopped": 2}
    assert list(data["rungs"]["number"]) == [0, 0, 0, 1, 2, 2]
    names = [trace.name for trace in rungs_figure(data).data]
    assert names == ["reached the top rung (1)", "stopped at a rung (2)"]


def test_dashboard_counts_and_draws_the_stopped_trials(tmp_path) -> None:
    study = make_run(tmp_path, POINTS)
    data = dashboard_data(study, breakdowns=False)
    assert data["summary"]["states"] == {"COMPLETE": 1, "STOPPED": 2}
    stopped = [t for t in data["figures"]["pareto"]["data"] if t.get("meta") == STOPPED_META]
    assert len(stopped) == 1 and len(stopped[0]["x"]) == 2
    assert "does not learn" in stopped[0]["hovertext"][0]
    assert len(data["figures"]["rungs"]["data"]) == 2

