"""The Ray backend writes the same study as the local backend (real Ray, fake evaluator).

The first test starts a local Ray in this process; the killed-driver test runs its drivers in
subprocesses that join a throw-away cluster started with ``ray start --head`` (the
``--address`` path).
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

pytestmark = pytest.mark.slow

SPACE = {"stages": [{"blocks": 1, "stride": 1, "channels": [8, 16]}]}
MAX_ACE = 3000.0  # the fake evaluator's ACE v2 ranges over about 500..9000 in this space


def _config(max_ace: float | None = MAX_ACE):  # -> SearchConfig
    from search.config import config_from_dict

    return config_from_dict({"space": SPACE, "max_ace": max_ace, "search": {"population_size": 4}})


def _new_study(run_dir: Path):  # -> optuna.Study
    import optuna

    from results.storage import open_storage
    from search.objective import DIRECTIONS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        storage=open_storage(run_dir, create=True),
        study_name="pikenas",
        directions=list(DIRECTIONS),
        load_if_exists=True,
    )


@pytest.fixture(scope="module")
def ray_session():
    import ray

    yield
    if ray.is_initialized():
        ray.shutdown()


def test_ray_search_writes_the_local_backends_study(tmp_path: Path, ray_session: None) -> None:
    import optuna
    from optuna.trial import TrialState

    from results.storage import open_storage
    from search._ray_backend import run_ray_search
    from search.objective import FakeEvaluator
    from search.samplers import make_sampler
    from search.worker import work

    config = _config()
    study = _new_study(tmp_path)
    summary = run_ray_search(
        config,
        study,
        make_sampler("random", 0, 4),
        n_trials=6,
        out_dir=tmp_path,
        evaluator_spec="fake",
        workers=2,
        shutdown=False,
    )
    loaded = optuna.load_study(study_name="pikenas", storage=open_storage(tmp_path))
    assert [d.name for d in loaded.directions] == ["MAXIMIZE", "MINIMIZE"]
    states = Counter(trial.state for trial in loaded.trials)
    assert states[TrialState.COMPLETE] == 6
    assert states[TrialState.RUNNING] == 0
    assert summary.complete == 6
    assert summary.pruned == states[TrialState.PRUNED]
    assert Path(summary.experiment_dir).is_dir()
    assert str(tmp_path.resolve() / "ray") in summary.experiment_dir

    # The same user attributes as the local backend's per-trial logic writes.
    local = optuna.create_study(directions=["maximize", "minimize"])
    work(local, config.space, FakeEvaluator(), 3, max_ace=None, heartbeat_interval=1.0)
    local_ok_keys = {
        frozenset(trial.user_attrs) for trial in local.trials if trial.user_attrs["status"] == "ok"
    }
    for trial in loaded.trials:
        status = trial.user_attrs["status"]
        if trial.state == TrialState.COMPLETE and status == "ok":
            assert {frozenset(trial.user_attrs)} == local_ok_keys
            assert trial.values[1] == trial.user_attrs["ace_v2"] <= MAX_ACE
            assert trial.values[0] == trial.user_attrs["val_accuracy"]
        elif trial.state == TrialState.COMPLETE:
            assert status == "duplicate"
            original = loaded.trials[trial.user_attrs["duplicate_of"]]
            assert original.values == trial.values
        else:
            assert trial.state == TrialState.PRUNED
            assert status == "over_budget"
            assert trial.user_attrs["ace_v2"] > MAX_ACE
            assert "over max_ace" in trial.user_attrs["reason"]
            assert trial.values is None
        worker_host, _, worker_pid = trial.user_attrs["worker"].rpartition(":")
        assert int(worker_pid) != os.getpid()  # told by the driver, run in a Ray actor


DRIVER = """
import sys
from search._ray_backend import run_ray_search
from search.samplers import make_sampler
from tests.search_tests.test_ray_backend import _config, _new_study
from pathlib import Path
run_dir = Path(sys.argv[1])
run_ray_search(_config(None), _new_study(run_dir), make_sampler("random", 0, 4), n_trials=4,
               out_dir=run_dir, evaluator_spec="fake:" + sys.argv[2], workers=2,
               address=sys.argv[3])
"""


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Address of a one-node cluster started with ``ray start --head`` (stopped afterwards:
    only the processes this fixture started, never other Ray instances)."""
    import socket

    from search._ray_backend import ray_environment

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("ray-cluster") / "ray-start.log"
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block"]
    command += ["--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2"]
    command += ["--include-dashboard", "false", "--disable-usage-stats"]
    with open(log, "wb") as out:
        head = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **ray_environment()},
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while b"Ray runtime started" not in log.read_bytes():
            if head.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"ray start failed: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()  # --block: ray start stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)


def test_killed_driver_is_resumed(tmp_path: Path, ray_cluster: str) -> None:
    """SIGKILL the driver (joined to a running cluster) while it has trials running; the
    rerun fails them, retries their genomes and ends with exactly N COMPLETE trials and none
    running."""
    import optuna
    from optuna.trial import TrialState

    from results.storage import open_storage

    root = Path(__file__).resolve().parents[2]
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path), "60", ray_cluster],
        cwd=root,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_running_trials(tmp_path, count=2, timeout=60)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)

    rerun = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tmp_path), "0", ray_cluster],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    study = optuna.load_study(study_name="pikenas", storage=open_storage(tmp_path))
    states = Counter(trial.state for trial in study.trials)
    assert states[TrialState.COMPLETE] == 4
    assert states[TrialState.RUNNING] == 0
    killed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(killed) == 2
    for trial in killed:
        assert "is gone" in trial.user_attrs["reason"]
        retry = [t for t in study.trials if t.user_attrs.get("retry_of") == trial.number]
        assert [t.params for t in retry] == [trial.params]


def _wait_for_running_trials(run_dir: Path, count: int, timeout: float) -> None:
    import optuna
    from optuna.trial import TrialState

    from results.storage import journal_path, open_storage

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal_path(run_dir).is_file():
            try:
                study = optuna.load_study(study_name="pikenas", storage=open_storage(run_dir))
            except KeyError:
                study = None
            if study is not None:
                running = study.get_trials(states=(TrialState.RUNNING,))
                if len(running) >= count and all(t.params for t in running):
                    return
        time.sleep(0.5)
    raise AssertionError(f"the driver never had {count} trials running")
