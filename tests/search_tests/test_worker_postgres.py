"""`pikenas worker` processes sharing a real PostgreSQL study (server from conftest.py).

Workers run as real processes with the tests' zero-cost fake evaluator (``--evaluator FAKE``,
its delay in the environment): what is tested is the sharing, counting and recovery, not
training.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.search_tests.conftest import PIKENAS, fake_env
from tests.search_tests.fakes import FAKE

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _worker_command(config: Path, url: str, *options: str) -> list[str]:
    return [PIKENAS, "worker", str(config), "--storage", url, "--study", "shared", *options]


def _load(url: str):  # -> optuna.Study
    import optuna

    return optuna.load_study(study_name="shared", storage=url)


def _finish(process: subprocess.Popen[str], timeout: float = 120) -> str:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return out


def test_two_workers_share_one_study_exactly(config_file: Path, postgres_url: str) -> None:
    from optuna.trial import TrialState

    n_trials = 8
    workers = [
        subprocess.Popen(
            _worker_command(
                config_file, postgres_url, "--trials", str(n_trials), "--seed", str(seed)
            )
            + ["--evaluator", FAKE],
            env=fake_env(0.2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [_finish(process) for process in workers]

    study = _load(postgres_url)
    states = Counter(trial.state for trial in study.trials)
    assert states[TrialState.COMPLETE] == n_trials  # exactly N: the advisory lock
    assert states[TrialState.RUNNING] == 0
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert "search_config" in study.user_attrs
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all(t.user_attrs["status"] in ("ok", "duplicate") for t in complete)
    assert all(len(t.values) == 2 and 0 <= t.values[0] <= 1 for t in complete)
    # Both workers took part, and their own counts add up to the study's (none lost or
    # told twice).
    by_worker = Counter(t.user_attrs["worker"] for t in complete)
    assert len(by_worker) == 2, by_worker
    told = [int(out.split(": ", 1)[1].split(" complete")[0]) for out in outputs]
    assert sum(told) == n_trials
    assert sorted(told) == sorted(by_worker.values())


def _can_set_own_hostname() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "--uts", "true"], capture_output=True, timeout=10, check=False
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def test_killed_worker_trial_is_failed_by_heartbeat_and_retried(
    config_file: Path, postgres_url: str
) -> None:
    """Worker A (on "another machine": its own hostname where the test may set one) dies with
    SIGKILL in the middle of a trial; worker B fails that trial once its heartbeat is stale
    and runs its genome again."""
    from optuna.trial import TrialState

    timing = ["--heartbeat-interval", "1", "--stale-after", "4"]
    command_a = _worker_command(config_file, postgres_url, "--trials", "4", "--seed", "1")
    command_a += [*timing, "--evaluator", FAKE]
    other_host = _can_set_own_hostname()
    if other_host:  # a private UTS namespace: worker A cannot be checked by its pid
        quoted = " ".join(f"'{part}'" for part in command_a)
        command_a = ["unshare", "--uts", "sh", "-c", f"hostname other-machine && exec {quoted}"]
    worker_a = subprocess.Popen(
        command_a,
        env=fake_env(60),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        victim = _wait_for_running_trial_with_heartbeat(postgres_url, timeout=40)
    finally:
        os.killpg(worker_a.pid, signal.SIGKILL)
        worker_a.wait(timeout=10)
    worker_b = subprocess.Popen(
        _worker_command(config_file, postgres_url, "--trials", "4", "--seed", "2")
        + [*timing, "--evaluator", FAKE],
        env=fake_env(0.05),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out = _finish(worker_b)
    assert "1 stale trials recovered" in out

    study = _load(postgres_url)
    trials = {trial.number: trial for trial in study.trials}
    dead = trials[victim]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["status"] == "failed"
    if other_host:  # only the heartbeat can tell: the reason says so
        assert dead.user_attrs["worker"].startswith("other-machine:")
        assert "no heartbeat from worker other-machine:" in dead.user_attrs["reason"]
    else:
        assert "is gone" in dead.user_attrs["reason"]
    retries = [t for t in study.trials if t.user_attrs.get("retry_of") == victim]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params
    states = Counter(trial.state for trial in study.trials)
    assert states[TrialState.COMPLETE] == 4
    assert states[TrialState.RUNNING] == 0


def _wait_for_running_trial_with_heartbeat(url: str, timeout: float) -> int:
    """Number of the first RUNNING trial that has a heartbeat (its worker is mid-trial)."""
    import optuna
    from optuna.trial import TrialState

    from pikenas.results.record import HEARTBEAT_ATTR

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = _load(url)
        except (KeyError, optuna.exceptions.OptunaError):  # not created yet
            study = None
        if study is not None:
            for trial in study.get_trials(states=(TrialState.RUNNING,)):
                if HEARTBEAT_ATTR in trial.system_attrs:
                    return trial.number
        time.sleep(0.5)
    raise AssertionError("worker A never started a trial")


def test_advisory_lock_excludes_and_survives_a_lost_connection(postgres_url: str) -> None:
    import threading

    from sqlalchemy import create_engine, text

    from pikenas.search.lock import PostgresAdvisoryLock

    first = PostgresAdvisoryLock(postgres_url, "shared")
    second = PostgresAdvisoryLock(postgres_url, "shared")
    other_study = PostgresAdvisoryLock(postgres_url, "another")
    entered = threading.Event()
    try:
        with first:
            waiter = threading.Thread(target=lambda: (second.__enter__(), entered.set()))
            waiter.start()
            with other_study:  # a different study's lock is independent
                pass
            assert not entered.wait(1.0)  # the second holder waits for the first
        assert entered.wait(10.0)
        second.__exit__(None, None, None)
        waiter.join()

        # The server drops the first lock's idle connection; the next use reconnects.
        admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
        admin.dispose()
        assert killed >= 1
        with first:
            pass
    finally:
        for lock in (first, second, other_study):
            lock.close()
