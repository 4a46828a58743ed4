"""`pikenas front | dashboard | export` run in-process through the real entry point."""

from __future__ import annotations

import json

import pytest

from pikenas.search.cli import main
from tests.results_tests._studies import MIXED, make_run
from tests.results_tests.test_rungs import POINTS


@pytest.fixture
def run_dir(tmp_path):
    make_run(tmp_path / "run", MIXED)
    return tmp_path / "run"


def test_front_json_lists_the_front(run_dir, capsys):
    assert main(["front", str(run_dir), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["number"] for r in records] == [0, 2, 5]  # trial 3 is trial 2's architecture
    assert records[1]["same_archid"] == "3"
    assert {"number", "accuracy", "ace_v2", "archid", "ace_v1", "final_accuracy"} <= set(records[0])


def test_front_table_and_csv(run_dir, capsys):
    assert main(["front", str(run_dir)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:8] == ["trial", "proxy", "acc", "%", "final", "acc", "%", "ACE"]
    assert "ACE v2 [bit-ops]" in table[0]
    assert len(table) == 6 and "95.00" in table[3]  # header, 3 architectures, legend, verdict
    assert table[4].startswith("bits: weight/input-activation bits")
    # the baseline is cheaper than every architecture reaching its accuracy: no saving claimed
    assert table[5].startswith(
        "no cheaper searched architecture reaches mobilenet_v1-0.25-w4a4's 50.0 %: the cheapest"
    )
    assert "matches" not in table[5]
    assert main(["front", str(run_dir), "--csv", "--study", "pikenas"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("number,accuracy,ace_v2") and len(lines) == 4


def test_front_help_promises_only_the_columns_it_shows(run_dir, capsys):
    from pikenas.search.cli._front import TABLE_COLUMNS

    assert main(["front", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--csv and --json add MACs, parameters, elementwise share of ACE v2" in text
    assert main(["front", str(run_dir)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    for _, name in TABLE_COLUMNS:
        assert name.format(cost="ACE v2").split()[0] in header


def test_front_filters_by_accuracy_and_ace(run_dir, capsys):
    assert main(["front", str(run_dir), "--json", "--min-accuracy", "0.85"]) == 0
    assert [r["number"] for r in json.loads(capsys.readouterr().out)] == [5]
    assert main(["front", str(run_dir), "--json", "--max-ace", "300"]) == 0
    assert [r["number"] for r in json.loads(capsys.readouterr().out)] == [0, 2]
    assert main(["front", str(run_dir), "--max-ace", "10"]) == 0
    assert capsys.readouterr().out.startswith("no front architecture passes")
    assert main(["front", str(run_dir), "--min-accuracy", "90"]) == 2  # a fraction, not %
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("command", ["front", "dashboard", "export"])
def test_bad_run_folder_exits_2_with_one_line(tmp_path, capsys, command):
    extra = ["--pareto"] if command == "export" else []
    assert main([command, str(tmp_path / "missing"), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "no study found" in captured.err
    assert not (tmp_path / "missing").exists()


def test_unknown_study_exits_2_listing_names(run_dir, capsys):
    assert main(["front", str(run_dir), "--study", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its studies are: pikenas" in err


def test_front_csv_and_json_together_is_rejected(run_dir, capsys):
    assert main(["front", str(run_dir), "--csv", "--json"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_dashboard_writes_the_offline_file(run_dir, capsys):
    assert main(["dashboard", str(run_dir), "--no-breakdowns"]) == 0
    assert (run_dir / "dashboard.html").is_file()
    assert "dashboard written to" in capsys.readouterr().out


def test_dashboard_serve_and_out_exclude_each_other(run_dir, capsys):
    assert main(["dashboard", str(run_dir), "--serve", "--out", "x.html"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_export_needs_exactly_one_selector(run_dir, capsys):
    assert main(["export", str(run_dir)]) == 2
    assert main(["export", str(run_dir), "--trial", "1", "--pareto"]) == 2
    assert capsys.readouterr().err.count("exactly one of --trial N and --pareto") == 2


@pytest.mark.slow
def test_export_trial_writes_a_bundle(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--trial", "1", "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out.strip() == f"exported {tmp_path / 'b' / 'trial-1'}"
    assert (tmp_path / "b" / "trial-1" / "model.onnx").is_file()


def test_export_unknown_trial_exits_2(run_dir, capsys):
    assert main(["export", str(run_dir), "--trial", "99"]) == 2
    assert "no trial 99" in capsys.readouterr().err


def test_dashboard_zoo_reference_and_unknown_zoo_name(run_dir, capsys):
    args = ["dashboard", str(run_dir), "--no-breakdowns", "--zoo", "tiny-w4a4"]
    assert main(args) == 0
    assert "tiny-w4a4" in (run_dir / "dashboard.html").read_text()
    assert main(["dashboard", str(run_dir), "--zoo", "nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_front_command_counts_the_stopped_trials_under_the_front(tmp_path, capsys) -> None:
    make_run(tmp_path, POINTS)
    assert main(["front", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4  # header, trial 0, the bits legend, the count
    assert lines[-1] == (
        "not on the front: 2 trials stopped at a rung of successive halving (1 after 1 "
        "epoch(s), 1 after 3 epoch(s); 1 of them because they do not learn)"
    )
