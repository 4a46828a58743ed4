from __future__ import annotations

import math

import numpy as np
import pytest

from pikenas.results.figure_data import (
    ace_breakdown_data,
    bits_heatmap_data,
    hypervolume_data,
    pareto_scatter_data,
    proxy_final_data,
)
from pikenas.results.figures import (
    BASELINES_META,
    TRIALS_META,
    ace_breakdown_figure,
    bits_heatmap_figure,
    hypervolume_figure,
    pareto_figure,
    proxy_final_figure,
)
from pikenas.results.ranking import kendall_tau
from pikenas.results.trials import load
from tests.results_tests._studies import Point, make_run


@pytest.fixture
def frame(mixed_run):
    return load(mixed_run)


def test_pareto_scatter_data(frame):
    data = pareto_scatter_data(frame, zoo_ace={"pokebnn-1.0x": 2000.0})
    points = data["points"]
    assert points["number"].tolist() == [0, 1, 2, 3, 4, 5]  # completed trials only
    assert points["on_front"].tolist() == [True, False, True, True, False, True]
    assert data["front"]["number"].tolist() == [0, 2, 3, 5]
    # ACE v2 300 with elementwise share 0.25 -> 225 MAC + 75 elementwise
    assert points.loc[2, "mac_cost"] == 225.0 and points.loc[2, "elementwise_cost"] == 75.0
    assert points.loc[0, "baseline"] == "mobilenet_v1-0.25-w4a4" and points.loc[1, "baseline"] == ""
    assert "bits w/a 8/8 4/8 4/4 4/4 4/4 8/8" in points.loc[2, "summary"]
    assert data["zoo"].to_dict("records") == [{"name": "pokebnn-1.0x", "ace_v2": 2000.0}]
    assert data["log_x"] is True  # 100 .. 2000 spans more than a factor 3
    linear = pareto_scatter_data(frame[frame["ace_v2"].between(250, 600)])
    assert linear["log_x"] is False  # 300 .. 500: within a factor 3
    assert pareto_figure(data).layout.updatemenus[0].buttons[1].args == ({"xaxis.type": "linear"},)


def test_baselines_are_always_drawn_and_named_once(tmp_path):
    """A baseline stopped at a rung and one over budget are drawn with their names; --zoo
    names that are study baselines give no second ACE v2 line."""
    make_run(
        tmp_path,
        [
            Point(0.9, 100.0),
            Point(0.9, 500.0, attrs={"baseline": "tiny-w8a8"}),
            Point(
                0.0,
                800.0,
                state="PRUNED",
                channels=16,
                attrs={
                    "baseline": "tiny-w4a4",
                    "status": "stopped",
                    "rungs": [{"epochs": 1, "val_accuracy": 0.4, "val_loss": 1.0}],
                },
            ),
            Point(0.0, 9000.0, state="PRUNED", channels=24, attrs={"baseline": "tiny-float"}),
        ],
    )
    data = pareto_scatter_data(
        load(tmp_path), zoo_ace={"tiny-w8a8": 123.0, "tiny-w4a4": 1.0, "pokebnn-1.0x": 7.0}
    )
    assert data["zoo"]["name"].tolist() == ["pokebnn-1.0x"]  # the others are study baselines
    baselines = data["baselines"].set_index("name")
    assert baselines.loc["tiny-w4a4", "state"] == "stopped after 1 epochs"
    assert baselines.loc["tiny-w4a4", "accuracy"] == 0.4
    assert baselines.loc["tiny-float", "state"] == "over budget"
    assert math.isnan(baselines.loc["tiny-float", "accuracy"])
    assert data["stopped"].empty  # the stopped baseline is drawn as a baseline, not grey
    figure = pareto_figure(data)
    drawn = [trace for trace in figure.data if trace.meta == BASELINES_META]
    assert list(drawn[0].text) == ["tiny-w4a4", "tiny-float"]
    completed = [t for t in figure.data if t.meta == TRIALS_META and t.name == "zoo baselines"]
    assert list(completed[0].text) == ["tiny-w8a8"] and list(completed[0].x) == [500.0]


def test_pareto_figure_has_one_point_per_completed_trial_and_escapes(tmp_path):
    evil = "<img src=x onerror=alert(1)>"
    make_run(tmp_path, [Point(0.5, 10.0, attrs={"baseline": evil}), Point(0.6, 1000.0)])
    data = pareto_scatter_data(load(tmp_path))
    assert data["log_x"] is True
    figure = pareto_figure(data, title=evil)
    trial_traces = [t for t in figure.data if t.meta == TRIALS_META]
    assert sum(len(t.x) for t in trial_traces) == 2
    text = figure.to_json()
    assert "<img" not in text and "&lt;img" in text
    assert figure.layout.xaxis.type == "log"


def test_hypervolume_data(frame):
    data = hypervolume_data(frame)
    history = data["history"]
    assert history["number"].tolist() == [0, 1, 2, 3, 4, 5]
    # reference (0, 1.1 * 900 = 990): after trial 0: 0.5 * 890 = 445
    assert data["reference"] == (0.0, pytest.approx(990.0))
    assert history["hypervolume"].iloc[0] == pytest.approx(445.0)
    # final: 0.5*(300-100) + 0.8*(900-300) + 0.9*(990-900) = 100 + 480 + 81 = 661
    assert history["hypervolume"].iloc[-1] == pytest.approx(661.0)
    figure = hypervolume_figure(data)
    assert "990" in figure.layout.title.text


def test_bits_heatmap_data(frame):
    data = bits_heatmap_data(frame)
    assert data["rows"] == [0, 2, 5]  # one row per architecture (3 is 2 again)
    assert data["row_labels"][0] == "#0 mobilenet_v1-0.25-w4a4 (50.0%)"
    assert data["layers"] == ["stem", "b0.dw", "b0.pw", "b1.dw", "b1.pw", "head"]
    assert data["weight_bits"][1].tolist() == [8, 4, 4, 4, 4, 8]
    assert data["activation_bits"][1].tolist() == [8, 8, 4, 4, 4, 8]
    assert data["text"][1][1] == "4/8"
    bits_heatmap_figure(data)


def test_bits_heatmap_pads_shorter_architectures(tmp_path):
    make_run(tmp_path, [Point(0.5, 10.0, bits=((2, 2),)), Point(0.9, 50.0)])
    data = bits_heatmap_data(load(tmp_path))
    assert data["layers"] == ["stem", "b0.dw", "b0.pw", "b1.dw", "b1.pw", "head"]
    assert np.isnan(data["weight_bits"][0, 3]) and data["text"][0][3] == ""
    assert data["weight_bits"][0, 5] == 8  # the head lines up although block 1 is missing


def test_ace_breakdown_data_sums_per_layer():
    report = {
        "breakdown": [
            {"layer": "stem", "op": "mac", "count": 10, "bits_a": 8, "bits_b": 8, "cost": 640},
            {"layer": "stem", "op": "mul", "count": 4, "bits_a": 32, "bits_b": 32, "cost": 4096},
            {"layer": "stem", "op": "add", "count": 4, "bits_a": 32, "bits_b": 32, "cost": 128},
            {"layer": "head", "op": "mac", "count": 5, "bits_a": 8, "bits_b": 4, "cost": 160},
        ]
    }
    table = ace_breakdown_data(report)
    assert table["layer"].tolist() == ["stem", "head"]
    assert table["mac_cost"].tolist() == [640.0, 160.0]
    assert table["elementwise_cost"].tolist() == [4224.0, 0.0]
    assert table["total"].sum() == 640 + 4096 + 128 + 160
    figure = ace_breakdown_figure(table)
    assert [t.name for t in figure.data] == ["MACs", "elementwise"]


def test_ace_breakdown_groups_modules_by_block():
    report = {
        "breakdown": [
            {"layer": "stem.conv", "op": "mac", "cost": 10},
            {"layer": "stem.stage", "op": "mul", "cost": 5},
            {"layer": "blocks.0.depthwise", "op": "mac", "cost": 3},
            {"layer": "blocks.0.depthwise_stage", "op": "add", "cost": 2},
            {"layer": "blocks.10.pointwise", "op": "mac", "cost": 7},
            {"layer": "head.linear", "op": "mac", "cost": 1},
        ]
    }
    table = ace_breakdown_data(report)
    assert table["layer"].tolist() == ["stem", "blocks.0", "blocks.10", "head"]
    assert table["mac_cost"].tolist() == [10.0, 3.0, 7.0, 1.0]
    assert table["elementwise_cost"].tolist() == [5.0, 2.0, 0.0, 0.0]
    assert len(ace_breakdown_data(report, by="module")) == 6


def test_proxy_final_data(tmp_path):
    finals = (0.6, 0.7, 0.65, 0.9, 0.85)
    make_run(
        tmp_path,
        [
            Point(0.5 + i / 10, 10.0 * (i + 1), channels=8 + i, attrs={"final_accuracy": final})
            for i, final in enumerate(finals)
        ]
        + [Point(0.95, 400.0, channels=32)],
    )
    frame = load(tmp_path)
    data = proxy_final_data(frame)
    assert data["points"]["number"].tolist() == [0, 1, 2, 3, 4]
    # pairs 10: discordant (1,2) and (3,4), the rest concordant -> (8 - 2) / 10
    assert data["tau"] == pytest.approx(0.6)
    assert "Kendall tau = 0.600" in proxy_final_figure(data).layout.title.text
    # zoomed to the data: accuracies 0.5 .. 0.9, padded by 10 % of the span
    assert data["range"] == pytest.approx([0.46, 0.94])
    assert list(proxy_final_figure(data).layout.xaxis.range) == pytest.approx([0.46, 0.94])
    few = proxy_final_data(frame[frame["number"] < 3])
    assert math.isnan(few["tau"])  # 3 points: no tau
    assert "from 5 trained trials on; 3 so far" in proxy_final_figure(few).layout.title.text
    assert proxy_final_data(frame.iloc[:0])["range"] == [0.0, 1.0]


def test_kendall_tau_with_ties():
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x ties one pair: pairs 3, concordant 2, tied-in-x 1 -> 2 / sqrt(2 * 3)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau([1, 1], [2, 3]))


def test_importance_per_objective_uses_optunas_evaluator_and_negates_accuracy():
    import optuna

    from pikenas.results.insight_data import importance_data
    from pikenas.results.insight_figures import importance_figure

    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0)
    )

    def objective(trial):
        width = trial.suggest_int("width", 1, 100)
        bits = trial.suggest_int("bits", 1, 8)
        return width / 100, 2.0**bits  # accuracy from width only, ACE from bits only

    assert importance_data(study).empty
    study.optimize(objective, n_trials=4)
    assert importance_data(study).empty  # fewer than MIN_IMPORTANCE_TRIALS
    study.optimize(objective, n_trials=40)
    table = importance_data(study, optuna.importance.FanovaImportanceEvaluator(seed=0))
    by_param = table.set_index("param")
    assert by_param.loc["width", "accuracy"] > 0.9 and by_param.loc["bits", "ace_v2"] > 0.9
    assert set(table["param"]) == {"width", "bits"}
    default = importance_data(study).set_index("param")  # PED-ANOVA: high accuracy = low -acc
    assert default.loc["width", "accuracy"] > default.loc["bits", "accuracy"]
    assert len(importance_figure(table).data) == 2


def test_timeline_and_hypervolume_over_time(frame):
    from pikenas.results.insight_data import hypervolume_time_data, timeline_data

    timeline = timeline_data(frame).set_index("number")
    assert timeline.loc[3, "outcome"] == "duplicate" and timeline.loc[6, "outcome"] == "over budget"
    assert timeline.loc[7, "outcome"] == "failed" and timeline.loc[8, "outcome"] == "running"
    assert (timeline["seconds"] >= 0).all() and set(timeline["worker"]) == {"host:1"}
    history = hypervolume_time_data(frame)
    assert history["number"].tolist() == [0, 1, 2, 3, 4, 5]
    assert history["wall_s"].is_monotonic_increasing
    assert np.all(np.diff(history["normalized"]) >= 0)
    # every finished trial spent proxy_wall_s = 1.5 CPU s (no rung records): 6 by trial 5
    assert history["cpu_s"].tolist() == [1.5, 3.0, 4.5, 6.0, 7.5, 9.0]


def test_op_breakdown_splits_by_kind_and_marks_float_operands():
    from pikenas.results.insight_data import op_breakdown_data
    from pikenas.results.insight_figures import op_breakdown_figure

    def row(op, cost, float_operands=False):
        return {"layer": "x", "op": op, "cost": cost, "float_operands": float_operands}

    table = op_breakdown_data(
        {
            "trial #1": {"breakdown": [row("mac", 60), row("mul", 30, True), row("mac", 10)]},
            "tiny-w8a8": {"breakdown": [row("mac", 50), row("mul", 150, True), row("add", 0)]},
        }
    )
    first = table[table["model"] == "trial #1"]
    assert first[["op", "cost"]].values.tolist() == [["mac", 70.0], ["mul (float)", 30.0]]
    assert first["share"].sum() == pytest.approx(1.0)
    assert table[table["model"] == "tiny-w8a8"]["op"].tolist() == ["mul (float)", "mac", "add"]
    figure = op_breakdown_figure(table)
    assert [trace.name for trace in figure.data] == ["mul (float)", "mac", "add"]
    assert list(figure.data[0].y) == [30.0, 150.0]
