"""`pikenas search`: bad input exits 2 leaving nothing behind; a fake-evaluator run end to end.
(SIGKILL in the middle and rerun: test_kill_and_rerun.py, for every backend.)"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from pikenas.results.record import StudyRecord, TrialRecord
from pikenas.search.cli import main
from pikenas.search.config import default_config_text
from tests.search_tests.fakes import FAKE

optuna.logging.set_verbosity(optuna.logging.WARNING)


def load(run: Path) -> optuna.Study:
    from pikenas.results.storage import open_storage

    return optuna.load_study(study_name="pikenas", storage=open_storage(run))


def counts(study: optuna.Study) -> dict[str, int]:
    result: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        result[trial.state.name] = result.get(trial.state.name, 0) + 1
    return result


def bad_config(tmp_path: Path) -> str:
    data = yaml.safe_load(default_config_text())
    data["space"]["choices"]["norm"] = ["batchnorm", "layernorm"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "--trials"),
        (["--workers", "0"], "--workers: Input should be greater than or equal to 1"),
        (["--sampler", "cmaes"], "unknown sampler 'cmaes'"),
        (["--population-size", "1"], "--population-size"),
        (["--max-ace", "0"], "--max-ace"),
        (["--backend", "moon"], "unknown backend 'moon'"),
        (["--storage", "study.db"], "--storage 'study.db' is neither a storage URL"),
        (["--storage", "redis://x"], "--storage unknown storage scheme 'redis'"),
        (["--cost-table", "absent.yaml"], "--cost-table: 'absent.yaml' is neither a built-in"),
        (["--evaluator", "no.such.module:make"], "--evaluator 'no.such.module:make'"),
        (["--heartbeat-interval", "5", "--stale-after", "6"], "must exceed twice"),
        (["--trials", "many"], "Invalid value for '--trials'"),
        (["missing.yaml"], "missing.yaml: no such config file"),
        (["BAD"], "space.choices.norm"),
    ],
)
def test_bad_input_exits_2_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "run"
    args = [bad_config(tmp_path) if a == "BAD" else a for a in args]
    assert main(["search", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.write_text("x")
    assert main(["search", "--out", str(out)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_fake_search_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["search", "--trials", "6", "--out", str(out), "--evaluator", FAKE]
    args += ["--full-train-top", "2", "--no-export", "--seed", "3", "--workers", "1"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "6 COMPLETE trials" in stdout and "Kendall tau" in stdout
    study = load(out)
    # the default search has successive halving: the other trials were stopped at a rung
    assert counts(study)["COMPLETE"] == 6 and set(counts(study)) <= {"COMPLETE", "PRUNED"}
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert all(TrialRecord.of(t).status == "stopped" for t in pruned)
    assert [d.name.lower() for d in study.directions] == ["maximize", "minimize"]
    record = StudyRecord.of(study)
    assert record.dataset == "digits" and record.pikenas_version
    assert (record.cost_table, record.cost_unit) == ("ace_v2", "bit-ops")
    assert json.loads(record.search_config)["search"]["seed"] == 3
    # the four zoo baselines were enqueued and evaluated first
    baselines = [t.user_attrs.get("baseline") for t in study.trials[:4]]
    assert sorted(baselines) == ["tiny-binary", "tiny-pikelpn", "tiny-w4a4", "tiny-w8a8"]
    assert len(record.final_results) == 2
    for number, final in record.final_results.items():
        assert final.final_dir == f"final/trial-{number}"  # relative: the run folder may move
        assert (out / final.final_dir / "metrics.json").is_file()
        assert study.trials[number].user_attrs["status"] == "ok"
    assert record.kendall_tau == 1.0  # the fake's full training repeats its proxy accuracy
    assert (out / "front.csv").is_file() and (out / "dashboard.html").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["search"]["trials"] == 6


def test_workers_that_give_up_say_why_through_the_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["search", "--trials", "2", "--out", str(out), "--evaluator", FAKE, "--max-ace", "1"]
    assert main([*args, "--workers", "2", "--no-export", "--full-train-top", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pikenas: failed: the study holds 0 of 2 COMPLETE trials: ")
    assert "trials were rejected or failed for 0 complete ones" in err
    pruned = counts(load(out))
    # max_rejected(2) = 70, plus at most the other worker's trial running at that moment
    assert set(pruned) == {"PRUNED"} and 70 <= pruned["PRUNED"] <= 71


def test_a_worker_that_cannot_start_is_restarted_then_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["search", "--trials", "2", "--out", str(out), "--workers", "1", "--no-export"]
    args += ["--evaluator", "tests.search_tests.fakes:broken"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("pikenas: failed: worker 0 exited with code 1 after 3 restarts")
    assert "(RuntimeError: this evaluator cannot start)" in err  # read from the study
    assert len((out / "logs" / "worker-0.log").read_text().split("Traceback")) == 5  # 1 + 3
