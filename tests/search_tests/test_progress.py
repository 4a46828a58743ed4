"""search.progress: the work plan, the snapshot's epochs, the display on a terminal and in a
log file; the CLI's --version / --quiet / --verbose and the small consistency fixes of
issue 21 (--no-export, --sampler case, ace --cost-table names)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import optuna
import pytest

from pikenas.search.cli import main
from pikenas.search.cli._app import OUTPUT
from pikenas.search.progress import ProgressDisplay, Snapshot, WorkPlan, format_duration, snapshot
from tests.search_tests.fakes import FAKE

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_work_plan_weights_every_rung_by_its_epochs() -> None:
    plan = WorkPlan(target=40, rungs=(1, 3, 9), reduction=3)
    # 9 trials train epoch 1, 3 of them epochs 2-3, 1 of them epochs 4-9 per top trial
    assert plan.per_top_trial == 9 * 1 + 3 * 2 + 1 * 6
    start = Snapshot(target=40)
    assert plan.total(start) == 40 * 21 and plan.fraction(start) == 0
    # measured work corrects the plan: 10 top trials cost 100 epochs (10 each, not 21)
    later = Snapshot(target=40, complete=10, epochs_done=100)
    per_top = (5 * 21 + 100) / 15
    assert plan.total(later) == pytest.approx(100 + 30 * per_top)
    assert WorkPlan(target=40, rungs=(9,)).per_top_trial == 9


def test_snapshot_counts_the_epochs_every_trial_trained() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    rung = {"val_accuracy": 0.5, "val_loss": 1.0}
    for attrs, values in (
        ({"status": "ok", "rungs": [{"epochs": 1, **rung}, {"epochs": 9, **rung}]}, [0.9, 5.0]),
        ({"status": "duplicate", "rungs": [{"epochs": 9, **rung}]}, [0.9, 5.0]),  # no training
        ({"status": "stopped", "rungs": [{"epochs": 3, **rung}]}, None),
        ({"status": "ok"}, [0.8, 3.0]),  # a fixed budget: top_epochs
    ):
        trial = study.ask()
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if values is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, values)
    snap = snapshot(study, target=5, top_epochs=9)
    assert snap.epochs_done == 9 + 0 + 3 + 9
    assert (snap.complete, snap.stopped, snap.front_size) == (3, 1, 2)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_in_a_log_file_with_an_eta_from_the_measured_rate() -> None:
    stream, clock = io.StringIO(), _Clock()
    plan = WorkPlan(target=10, rungs=(1, 3), reduction=2)  # 2 + 2 = 4 epochs per top trial
    with ProgressDisplay(plan, stream=stream, clock=clock) as display:
        display.update(Snapshot(target=10))
        clock.now = 10.0
        display.update(Snapshot(target=10, complete=1, epochs_done=4))  # < 30 s: no line
        clock.now = 40.0
        display.update(Snapshot(target=10, complete=5, epochs_done=20))
        clock.now = 41.0
        display.update(Snapshot(target=10, complete=10, epochs_done=40))  # the end: a line
        display.phase("full training 1/2: trial 3", 0, 2)
        clock.now = 61.0
        display.phase("full training 2/2: trial 5", 1, 2)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5, lines
    assert lines[0].startswith("search   0% (0/40 epochs), elapsed 0:00, ETA ?")
    # 20 epochs in 40 s = 0.5 epochs/s; 5 top trials missing x 4 epochs = 20 epochs -> 40 s
    assert lines[1].startswith("search  50% (20/40 epochs), elapsed 0:40, ETA 0:40: 5/10 done")
    assert lines[2].startswith("search 100% (40/40 epochs)")
    assert lines[3] == "full training 1/2: trial 3"
    assert lines[4] == "full training 2/2: trial 5 (ETA 0:20)"
    assert "\x1b" not in stream.getvalue()


def test_terminal_bar_fits_80_columns_without_source_links(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    stream = io.StringIO()
    plan = WorkPlan(target=40, rungs=(1, 3, 9), reduction=3)
    with ProgressDisplay(plan, stream=stream, terminal=True) as display:
        snap = Snapshot(
            target=40,
            complete=12,
            running=2,
            stopped=226,
            front_size=9,
            best_accuracy=0.989,
            lowest_ace_v2=123456.0,
            epochs_done=400,
        )
        display.update(snap)
        display.phase("full training 1/3: trial 205", 0, 3)
        display.phase("writing front.csv, dashboard.html and exports")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", stream.getvalue())
    lines = [line for line in re.split(r"[\r\n]", text) if line.strip()]
    assert max(len(line) for line in lines) <= 80
    assert "12/40 done, 2 running, 226 stopped | front 9 | best 98.9%" in text
    assert "full training 1/3: trial 205" in text
    assert not re.search(r"\w+\.py:\d+", text)  # no source-file links


def test_quiet_shows_nothing() -> None:
    stream = io.StringIO()
    with ProgressDisplay(WorkPlan(target=1), stream=stream, quiet=True) as display:
        display.update(Snapshot(target=1, complete=1, epochs_done=1))
        display.phase("full training 1/1: trial 0", 0, 1)
    assert stream.getvalue() == ""


def test_format_duration() -> None:
    assert [format_duration(s) for s in (5, 65, 3723, float("nan"))] == [
        "0:05",
        "1:05",
        "1:02:03",
        "?",
    ]


@pytest.fixture
def clean_output(monkeypatch):
    """--quiet / --verbose set the root logger's level and PIKENAS_LOG: restore both."""
    import logging

    level = logging.getLogger().level
    monkeypatch.delenv("PIKENAS_LOG", raising=False)
    yield
    OUTPUT.quiet = OUTPUT.verbose = False
    logging.getLogger().setLevel(level)


def test_version_quiet_and_verbose(capsys, clean_output) -> None:
    from pikenas import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"pikenas {__version__}\n"
    assert main(["--quiet", "--verbose", "zoo"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["-q", "zoo"]) == 0 and OUTPUT.quiet


def test_no_export_says_nothing_of_exports_and_sampler_names_ignore_case(
    tmp_path, capsys, clean_output
) -> None:
    out = tmp_path / "run"
    args = ["search", "--trials", "2", "--out", str(out), "--evaluator", FAKE, "--workers", "1"]
    args += ["--full-train-top", "0", "--no-export", "--sampler", "NSGA2"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "writing front.csv, dashboard.html\n" in captured.err
    assert "(front.csv, dashboard.html)\n" in captured.out
    assert "exports" not in (captured.err + captured.out).replace(str(tmp_path), "")
    assert "sampler: nsga2" in (out / "config.yaml").read_text()
    assert not (out / "exports").exists()


def test_ace_takes_the_cost_table_names_of_search(capsys) -> None:
    assert main(["ace", "tiny-w8a8", "--json"]) == 0
    default = json.loads(capsys.readouterr().out)["ace_v2"]
    assert main(["ace", "tiny-w8a8", "--json", "--cost-table", "ace_v2"]) == 0
    assert json.loads(capsys.readouterr().out)["ace_v2"] == default
    energy = str(
        Path(__file__).resolve().parents[2] / "configs/cost_tables/energy_45nm_illustrative.yaml"
    )
    assert main(["ace", "tiny-w8a8", "--json", "--cost-table", energy]) == 0
    assert json.loads(capsys.readouterr().out)["ace_v2"] != default
    assert main(["ace", "tiny-w8a8", "--cost-table", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ace_v2" in err  # the valid names are listed


def test_log_lines_go_above_the_live_bar_and_the_handler_is_restored() -> None:
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with ProgressDisplay(WorkPlan(target=2), stream=stream, terminal=True) as display:
            assert handler.stream is not stream  # routed through the display's console
            logging.getLogger("pikenas.test").error("a line while the bar is live")
            display.update(Snapshot(target=2, complete=1, epochs_done=1))
        assert handler.stream is stream
    finally:
        root.removeHandler(handler)
    assert "a line while the bar is live" in stream.getvalue()
