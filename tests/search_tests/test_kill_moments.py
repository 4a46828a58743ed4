"""Kills at chosen moments, with real processes: whatever moment a worker or a search dies at
(SIGKILL, or Ctrl-C), rerunning the same command ends with exactly N COMPLETE trials, none
RUNNING, every trial that was COMPLETE before still COMPLETE, and every zoo baseline run once.

Moments: right after a worker asked for its first trial (an enqueued baseline whose parameters
were still in the worker's write buffer), while it costs or trains it; during study creation,
after each baseline enqueued; and a whole ``pikenas search`` killed after various delays.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from pikenas.results.record import TrialRecord
from pikenas.results.storage import open_study
from pikenas.search.config import load_config
from tests.search_tests.conftest import PIKENAS, fake_env
from tests.search_tests.fakes import FAKE, KILL_ENV, KILLER

pytestmark = pytest.mark.slow

N = 8
BASELINES = load_config().baselines  # the embedded default search's


def _worker(storage: Path, evaluator: str) -> list[str]:
    return [PIKENAS, "worker", "--storage", str(storage), "--trials", str(N), "--evaluator"]\
        + [evaluator, "--heartbeat-interval", "1", "--stale-after", "30", "--seed", "1"]


def _check_finished(storage: Path, complete_before: set[int] = frozenset()) -> None:
    study = open_study(storage)
    states = Counter(trial.state for trial in study.trials)
    assert states[TrialState.COMPLETE] == N and states[TrialState.RUNNING] == 0, states
    complete = {t.number for t in study.trials if t.state == TrialState.COMPLETE}
    assert complete_before <= complete, "a COMPLETE trial was lost"
    records = [TrialRecord.of(trial) for trial in study.trials]
    first_enqueued = Counter(r.baseline for r in records if r.baseline and r.retry_of is None)
    assert first_enqueued == Counter(BASELINES), "a baseline was enqueued twice or not at all"
    # evaluated to the end exactly once: COMPLETE, or stopped at a rung of successive halving
    # (the default search has rungs)
    done = Counter(
        record.baseline
        for trial, record in zip(study.trials, records, strict=True)
        if trial.state == TrialState.COMPLETE or record.status == "stopped"
    )
    for name in BASELINES:
        assert done[name] == 1, f"baseline {name} is not evaluated exactly once: {done}"


@pytest.mark.parametrize("moment", ["fit", "cost", "proxy"])
@pytest.mark.parametrize("signal_name", ["KILL", "INT"])
def test_a_worker_killed_on_its_first_trial_loses_no_baseline(
    tmp_path: Path, moment: str, signal_name: str
) -> None:
    storage = tmp_path / "study.log"
    env = {**fake_env(), KILL_ENV: f"{moment}:{signal_name}"}
    killed = subprocess.run(
        _worker(storage, KILLER), env=env, capture_output=True, text=True, timeout=120
    )
    if signal_name == "KILL":
        assert killed.returncode == -signal.SIGKILL
    else:
        assert killed.returncode == 130, killed.stderr
        assert "pikenas: interrupted" in killed.stderr and "Traceback" not in killed.stderr
    first = open_study(storage).trials[0]
    assert first.state == TrialState.RUNNING and TrialRecord.of(first).baseline == BASELINES[0]

    # the study's own evaluator (a study refuses another), now at a moment that never comes
    calm = {**fake_env(), KILL_ENV: "never:KILL"}
    rerun = subprocess.run(
        _worker(storage, KILLER), env=calm, capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    _check_finished(storage)
    study = open_study(storage)
    assert study.trials[0].state == TrialState.FAIL
    retry = [t for t in study.trials if TrialRecord.of(t).retry_of == 0]
    assert len(retry) == 1 and TrialRecord.of(retry[0]).baseline == BASELINES[0]
    assert retry[0].params == study.trials[0].system_attrs["fixed_params"]


_KILL_DURING_CREATION = """
import os, signal, sys
import optuna
from pikenas.search.cli import main
after = int(sys.argv[1])
calls = []
def killing(original, is_event):
    def method(self, *args, **kwargs):
        if is_event(*args):
            if len(calls) == after:
                os.kill(os.getpid(), signal.SIGKILL)
            calls.append(1)
        return original(self, *args, **kwargs)
    return method
# the events of a study creation: each baseline enqueued, then search_config written
optuna.Study.enqueue_trial = killing(optuna.Study.enqueue_trial, lambda *args: True)
optuna.Study.set_user_attr = killing(
    optuna.Study.set_user_attr, lambda key, *rest: key == "search_config"
)
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("after", range(len(BASELINES) + 1))
def test_a_kill_during_study_creation_duplicates_no_baseline(tmp_path: Path, after: int) -> None:
    storage = tmp_path / "study.log"
    worker = _worker(storage, FAKE)[1:]
    command = [sys.executable, "-c", _KILL_DURING_CREATION, str(after), *worker]
    killed = subprocess.run(command, env=fake_env(), capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _assert_no_lock_is_held(tmp_path)
    rerun = subprocess.run(
        _worker(storage, FAKE), env=fake_env(), capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    _check_finished(storage)


def _complete(storage: Path) -> set[int]:
    if not storage.is_file():
        return set()
    try:
        study = open_study(storage)
    except Exception:  # noqa: BLE001 - killed before the study existed
        return set()
    return {t.number for t in study.trials if t.state == TrialState.COMPLETE}


@pytest.mark.parametrize(("delay_s", "how"), [(0.5, "KILL"), (2.5, "KILL"), (4.0, "KILL"),
                                              (3.0, "INT")])
def test_a_search_killed_at_any_moment_resumes_exactly(
    tmp_path: Path, delay_s: float, how: str
) -> None:
    run = tmp_path / "run"
    command = [PIKENAS, "search", "--out", str(run), "--trials", str(N), "--evaluator", FAKE]
    command += ["--workers", "2", "--full-train-top", "0", "--no-export"]
    command += ["--heartbeat-interval", "1", "--stale-after", "30"]
    process = subprocess.Popen(
        command,
        env=fake_env(1.0),  # 8 trials on 2 workers: at least 4 s of evaluation after start-up
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    time.sleep(delay_s)
    if how == "INT":  # Ctrl-C in a terminal: the whole foreground process group
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    if how == "INT" and process.returncode == 130:
        assert "pikenas: interrupted" in err and "Traceback" not in err, err
    time.sleep(1.0)  # local workers die with their parent
    before = _complete(run / "study.log")
    assert len(before) < N, "the search finished before it was killed"

    rerun = subprocess.run(command, env=fake_env(), capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    _check_finished(run / "study.log", before)


def _assert_no_lock_is_held(folder: Path) -> None:
    """What a killed process leaves blocks nobody: no lock file of Optuna's own (which a new
    process would wait 30 s on), and every pikenas lock file can be taken at once."""
    import fcntl

    leftovers = sorted(p.name for p in folder.iterdir() if "lock" in p.name)
    assert "study.log.lock" not in leftovers, leftovers
    for name in leftovers:
        with (folder / name).open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if held
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
