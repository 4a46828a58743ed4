from __future__ import annotations

import optuna
import pandas as pd

from pikenas.results.front import FRONT_COLUMNS, front_records, front_table, write_front_csv
from pikenas.results.trials import load
from tests.results_tests._studies import MIXED, make_run


def test_front_matches_optuna_best_trials(tmp_path):
    study = make_run(tmp_path, MIXED)
    table = front_table(load(tmp_path))
    assert list(table.columns) == list(FRONT_COLUMNS)
    assert table["number"].tolist() == [0, 2, 3, 5]
    assert sorted(table["number"]) == sorted(t.number for t in study.best_trials)
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
    assert csv["number"].tolist() == [0, 2, 3, 5]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_front_of_other_storage_needs_out(tmp_path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    study = optuna.create_study(storage=url, directions=["maximize", "minimize"])
    study.tell(study.ask(), [0.5, 3.0])
    out = write_front_csv(url, out=tmp_path / "f.csv")
    assert pd.read_csv(out)["ace_v2"].tolist() == [3.0]
