from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest

from pikenas.results.layers import bits_string, layer_bits
from pikenas.results.storage import open_study
from pikenas.results.trials import COLUMNS, load, trial_arch
from pikenas.space.errors import RunDirError
from tests.results_tests._studies import MIXED, Point, make_run, tiny_arch


def test_load_types_and_values(tmp_path):
    make_run(tmp_path, MIXED)
    frame = load(tmp_path)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["number"].tolist() == list(range(len(MIXED)))
    assert frame["state"].tolist() == ["COMPLETE"] * 6 + ["PRUNED", "FAIL", "RUNNING"]
    assert str(frame["number"].dtype) == "Int64" and str(frame["macs"].dtype) == "Int64"
    assert frame["accuracy"].dtype == "float64"
    assert frame.loc[2, "accuracy"] == 0.8 and frame.loc[2, "ace_v2"] == 300.0
    assert frame.loc[2, "ace_v1"] == 150.0 and frame.loc[2, "elementwise_share"] == 0.25
    # a pruned trial has no accuracy but keeps the ACE v2 it was rejected for
    assert math.isnan(frame.loc[6, "accuracy"]) and frame.loc[6, "ace_v2"] == 5000.0
    assert (
        frame.loc[6, "reason"] == "ACE v2 over budget" and frame.loc[6, "status"] == "over_budget"
    )
    assert frame.loc[0, "baseline"] == "mobilenet_v1-0.25-w4a4"
    assert pd.isna(frame.loc[1, "baseline"])
    assert frame.loc[3, "duplicate_of"] == 2 and pd.isna(frame.loc[2, "duplicate_of"])
    assert frame.loc[5, "final_accuracy"] == 0.95 and math.isnan(frame.loc[4, "final_accuracy"])
    # stem 8/8, block0 dw 4/8 (input from the 8-bit stem), pw 4/4, block1 4/4 4/4, head 8/8
    assert frame.loc[2, "layer_bits"] == "8/8 4/8 4/4 4/4 4/4 8/8"
    assert frame.loc[2, "weight_bits"] == [8, 4, 4, 4, 4, 8]
    assert frame.loc[2, "activation_bits"] == [8, 8, 4, 4, 4, 8]
    assert frame.loc[0, "duration_s"] >= 0 and math.isnan(frame.loc[8, "duration_s"])
    assert pd.isna(frame.loc[8, "datetime_complete"])
    assert frame.loc[0, "proxy_wall_s"] == 1.5
    assert trial_arch(frame.loc[2]) == tiny_arch(((4, 4), (4, 4)))
    assert frame.loc[2, "archid"] == tiny_arch(((4, 4), (4, 4))).archid


def test_load_accepts_storage_url_study_and_journal_file(tmp_path):
    study = make_run(tmp_path, MIXED[:2])
    assert len(load(study)) == 2
    assert len(load(str(tmp_path / "study.log"))) == 2
    assert len(load(f"journal://{tmp_path / 'study.log'}")) == 2
    url = f"sqlite:///{tmp_path / 'x.db'}"
    sql = optuna.create_study(storage=url, study_name="s", directions=["maximize", "minimize"])
    sql.tell(sql.ask(), [0.5, 3.0])
    assert load(url)["ace_v2"].tolist() == [3.0]


def test_empty_study_gives_empty_typed_frame(tmp_path):
    make_run(tmp_path, [])
    frame = load(tmp_path)
    assert frame.empty and list(frame.columns) == list(COLUMNS)


def test_unknown_run_folder_is_one_line_error(tmp_path):
    with pytest.raises(RunDirError, match="no study found") as info:
        load(tmp_path / "missing")
    assert "\n" not in str(info.value)


def test_study_choice_lists_names(tmp_path):
    make_run(tmp_path, [Point()], study_name="alpha")
    make_run(tmp_path, [Point(), Point()], study_name="beta")
    with pytest.raises(RunDirError, match="several studies.*alpha, beta.*--study"):
        load(tmp_path)
    with pytest.raises(RunDirError, match="no study named 'gamma'.*alpha, beta"):
        load(tmp_path, "gamma")
    assert len(load(tmp_path, "beta")) == 2
    assert open_study(tmp_path, "alpha").study_name == "alpha"


def test_layer_bits_of_pokebnn_like_blocks():
    arch = tiny_arch(((2, 3),))
    layers = layer_bits(arch)
    assert [layer.layer for layer in layers] == ["stem", "b0.dw", "b0.pw", "head"]
    assert bits_string(arch) == "8/8 2/8 2/3 8/8"


def test_study_info(mixed_run):
    from pikenas.results.trials import study_info

    info = study_info(open_study(mixed_run))
    assert info == {
        "study": "pikenas",
        "dataset": "digits",
        "sampler": "nsga2",
        "cost_table": "ace_v2",
        "cost_unit": "bit-ops",
        "cost_label": "ace_v2 (bit-ops)",
        "pikenas_version": "0.1.0",
    }


def test_unreadable_arch_does_not_hide_the_trial(tmp_path, caplog):
    make_run(tmp_path, [Point(0.5, 10.0, attrs={"arch": '{"version": 99}'})])
    frame = load(tmp_path)
    assert frame.loc[0, "accuracy"] == 0.5 and frame.loc[0, "layer_bits"] == ""
    assert "unreadable arch" in caplog.text


def test_display_name_hides_passwords():
    from pikenas.results.storage import display_name

    shown = display_name("postgresql+psycopg2://pikenas:s3cret@127.0.0.1:5432/pikenas")
    assert "s3cret" not in shown and shown.endswith("@127.0.0.1:5432/pikenas")
    assert display_name("/runs/demo") == "/runs/demo"
