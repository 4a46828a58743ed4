from __future__ import annotations

import optuna
import pandas as pd

from pikenas.evaluators._atomic import LEDGER_NAME
from pikenas.results.front import (
    FRONT_COLUMNS,
    baseline_verdicts,
    filter_front,
    front_records,
    front_table,
    verdict_line,
    write_front_csv,
)
from pikenas.results.trials import load
from tests.results_tests._studies import MIXED, Point, make_run


def test_front_matches_optuna_best_trials(tmp_path):
    study = make_run(tmp_path, MIXED)
    table = front_table(load(tmp_path))
    assert list(table.columns) == list(FRONT_COLUMNS)
    assert table["number"].tolist() == [0, 2, 5]  # 3 is the same architecture as 2
    best = {t.user_attrs["archid"]: t.number for t in reversed(study.best_trials)}
    assert sorted(table["number"]) == sorted(best.values())
    assert table["ace_v2"].is_monotonic_increasing and table["accuracy"].is_monotonic_increasing


def test_front_records_are_json_ready(mixed_run):
    records = front_records(load(mixed_run))
    assert records[0]["number"] == 0 and isinstance(records[0]["number"], int)
    assert records[0]["final_accuracy"] is None and records[-1]["final_accuracy"] == 0.95
    assert records[0]["baseline"] == "mobilenet_v1-0.25-w4a4"


def test_write_front_csv_atomically(tmp_path):
    make_run(tmp_path, MIXED)
    path = write_front_csv(tmp_path)
    assert path == tmp_path / "front.csv"
    csv = pd.read_csv(path)
    assert csv["number"].tolist() == [0, 2, 5]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [LEDGER_NAME]


def test_front_of_other_storage_needs_out(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    study = optuna.create_study(storage=url, directions=["maximize", "minimize"])
    study.tell(study.ask(), [0.5, 3.0])
    out = write_front_csv(url, out=tmp_path / "f.csv")
    assert pd.read_csv(out)["ace_v2"].tolist() == [3.0]


def test_front_is_a_set_of_architectures_best_trained_first(tmp_path):
    """Trials 1 and 3 share an architecture (same archid, same cost); 3 was fully trained, so
    it stands for it although 1 had the better proxy accuracy; 2 is a third copy."""
    bits = ((4, 4), (4, 4))
    make_run(
        tmp_path,
        [
            Point(0.5, 100.0),
            Point(0.91, 400.0, bits=bits),
            Point(0.91, 400.0, bits=bits, attrs={"status": "duplicate", "duplicate_of": 1}),
            Point(0.90, 400.0, bits=bits, attrs={"final_accuracy": 0.93}),
            Point(0.95, 900.0, channels=16),
        ],
    )
    table = front_table(load(tmp_path))
    assert table["archid"].is_unique
    assert table["number"].tolist() == [0, 3, 4]
    assert table.loc[1, "same_archid"] == "1 2" and table.loc[0, "same_archid"] == ""


def _baseline_study(tmp_path):
    return make_run(
        tmp_path,
        [
            Point(0.80, 50.0, channels=4),
            Point(0.90, 300.0, attrs={"baseline": "tiny-w8a8"}),
            Point(0.92, 100.0, channels=16),  # cheapest with >= 90 %: 3x lower
            Point(0.95, 200.0, channels=24),
            Point(0.99, 1000.0, attrs={"baseline": "tiny-float"}, bits=((8, 8), (8, 8))),
        ],
    )


def test_baseline_verdict_names_the_cheapest_member_at_its_accuracy(tmp_path):
    _baseline_study(tmp_path)
    frame = load(tmp_path)
    verdicts = baseline_verdicts(frame).set_index("baseline")
    assert verdicts.loc["tiny-w8a8", "member_number"] == 2
    assert verdicts.loc["tiny-w8a8", "ratio"] == 3.0
    assert pd.isna(verdicts.loc["tiny-float", "member_number"])
    lines = [verdict_line(row) for _, row in baseline_verdicts(frame).iterrows()]
    assert lines[0].startswith("trial 2 (92.0 %) matches tiny-w8a8's 90.0 % at 3.0x lower")
    assert lines[1] == "no searched architecture reaches tiny-float's 99.0 % yet"
    table = front_table(frame)
    assert table.set_index("number").loc[2, "matches"] == "tiny-w8a8 at 3.0x lower ACE v2"


def test_filter_front_by_accuracy_and_ace(tmp_path):
    _baseline_study(tmp_path)
    table = front_table(load(tmp_path))
    assert filter_front(table, min_accuracy=0.93)["number"].tolist() == [3, 4]
    assert filter_front(table, max_ace=150)["number"].tolist() == [0, 2]
    assert filter_front(table, min_accuracy=0.93, max_ace=150).empty
    assert filter_front(table)["number"].tolist() == table["number"].tolist()
