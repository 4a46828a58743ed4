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
    assert data["log_x"] is False  # 100 .. 2000 is within a factor 20


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
    assert data["rows"] == [0, 2, 3, 5]
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
    make_run(
        tmp_path,
        [
            Point(0.5, 10.0, attrs={"final_accuracy": 0.6}),
            Point(0.6, 20.0, attrs={"final_accuracy": 0.7}),
            Point(0.7, 30.0, attrs={"final_accuracy": 0.65}),
            Point(0.8, 40.0),
        ],
    )
    data = proxy_final_data(load(tmp_path))
    assert data["points"]["number"].tolist() == [0, 1, 2]
    assert data["tau"] == pytest.approx(1 / 3)  # 2 concordant, 1 discordant pair
    assert "0.333" in proxy_final_figure(data).layout.title.text
    empty = proxy_final_data(load(tmp_path).iloc[:1])
    assert math.isnan(empty["tau"])
    assert "n/a" in proxy_final_figure(empty).layout.title.text


def test_kendall_tau_with_ties():
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x ties one pair: pairs 3, concordant 2, tied-in-x 1 -> 2 / sqrt(2 * 3)
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau([1, 1], [2, 3]))
