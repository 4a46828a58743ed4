"""`pikenas search`: bad input exits 2 leaving nothing behind; a fake-evaluator run end to end;
SIGKILL in the middle and rerun (slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from search.cli import main
from search.config import default_config_text
from search.finalize import FINAL_RESULTS_ATTR, KENDALL_TAU_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)


def load(run: Path) -> optuna.Study:
    from results.storage import open_storage

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
        (["--workers", "0"], "--workers must be at least 1"),
        (["--sampler", "cmaes"], "unknown sampler 'cmaes'"),
        (["--population-size", "1"], "--population-size"),
        (["--max-ace", "0"], "--max-ace"),
        (["--backend", "moon"], "unknown backend 'moon'"),
        (["--storage", "study.db"], "--storage 'study.db'"),
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
    args = ["search", "--trials", "6", "--out", str(out), "--evaluator", "fake"]
    args += ["--full-train-top", "2", "--no-export", "--seed", "3", "--workers", "1"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "6 COMPLETE trials" in stdout and "Kendall tau" in stdout
    study = load(out)
    assert counts(study) == {"COMPLETE": 6}
    assert [d.name.lower() for d in study.directions] == ["maximize", "minimize"]
    assert set(study.user_attrs) >= {"pikenas_version", "dataset", "search_config", "cost_table"}
    assert json.loads(study.user_attrs["search_config"])["search"]["seed"] == 3
    # the four zoo baselines were enqueued and evaluated first
    baselines = [t.user_attrs.get("baseline") for t in study.trials[:4]]
    assert sorted(baselines) == ["tiny-binary", "tiny-pikelpn", "tiny-w4a4", "tiny-w8a8"]
    finals = study.user_attrs[FINAL_RESULTS_ATTR]
    assert len(finals) == 2
    for number, record in finals.items():
        assert (Path(record["final_dir"]) / "metrics.json").is_file()
        assert record["final_dir"].startswith(str(out / "final" / f"trial-{number}"))
    assert KENDALL_TAU_ATTR in study.user_attrs
    assert (out / "front.csv").is_file() and (out / "dashboard.html").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["search"]["trials"] == 6


@pytest.mark.slow
def test_sigkill_mid_search_then_rerun_ends_with_exactly_n(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "search", "search", "--trials", "12", "--workers", "2"]
    command += ["--out", str(out), "--evaluator", "fake:0.4", "--full-train-top", "0"]
    command += ["--no-export"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if (out / "study.log").is_file():
                study = load(out)
                if counts(study).get("COMPLETE", 0) >= 4 and counts(study).get("RUNNING"):
                    break
        else:
            pytest.fail("the search did not get going")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    time.sleep(1.0)  # the workers die with their parent (PR_SET_PDEATHSIG)
    killed = counts(load(out))
    assert killed.get("RUNNING", 0) >= 1 and killed["COMPLETE"] < 12
    for log in (out / "logs").glob("worker-*.log"):
        assert "done:" not in log.read_text()

    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    study = load(out)
    final = counts(study)
    assert final["COMPLETE"] == 12 and "RUNNING" not in final
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == killed["RUNNING"]
    for trial in failed:
        assert "is gone" in trial.user_attrs["reason"]
    retried = {t.user_attrs.get("retry_of") for t in study.trials} - {None}
    assert retried == {t.number for t in failed if t.params}
    assert os.path.isfile(out / "front.csv")
