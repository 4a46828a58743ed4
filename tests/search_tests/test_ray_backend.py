"""The Ray backend places actors running the same loop (real Ray, the tests' fake evaluator).

The first test starts a local Ray in this process; the second joins a throw-away cluster
started with ``ray start --head`` through ``pikenas search --address``. (SIGKILL of the driver
and rerun: test_kill_and_rerun.py.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from pikenas.results.record import TrialRecord, worker_reports
from pikenas.results.storage import open_study
from pikenas.search.config import config_from_dict
from pikenas.search.pipeline import prepare_run, run_backend
from pikenas.search.spec import RayPlacement, RunRequest, WorkerSpec
from tests.search_tests.conftest import PIKENAS, SMALL_CONFIG, fake_env
from tests.search_tests.fakes import FAKE

pytestmark = pytest.mark.slow

SPACE = {"stages": [{"blocks": 1, "stride": 1, "channels": [8, 16]}]}
MAX_ACE = 3000.0  # the fake evaluator's ACE v2 ranges over about 500..9000 in this space


def test_ray_actors_write_the_local_backends_study(tmp_path: Path) -> None:
    config = config_from_dict({"space": SPACE, "max_ace": MAX_ACE, "search": {"sampler": "random"}})
    spec = WorkerSpec(
        config=config, storage=str(tmp_path / "study.log"), n_trials=8, seed=0, evaluator=FAKE
    )
    request = RunRequest(
        worker=spec, out=tmp_path, workers=2, backend="ray", ray=RayPlacement(cpus_per_trial=1)
    )
    prepare_run(request)
    run_backend(request)
    study = open_study(tmp_path)
    states = Counter(trial.state for trial in study.trials)
    assert states[TrialState.COMPLETE] == 8 and states[TrialState.RUNNING] == 0
    host = socket.gethostname()
    reports = worker_reports(study)  # every actor reports, even one that found no work left
    assert len(reports) == 2 and all(label.startswith(f"{host}:") for label in reports)
    assert f"{host}:{os.getpid()}" not in reports  # run in the actors, not in the driver
    assert {TrialRecord.of(trial).worker for trial in study.trials} <= set(reports)
    assert sum(report.complete for report in reports.values()) == 8
    for trial in study.trials:
        record = TrialRecord.of(trial)
        assert set(trial.user_attrs) <= set(TrialRecord.model_fields)
        if trial.state == TrialState.PRUNED:
            assert record.status == "over_budget" and record.ace_v2 > MAX_ACE
        else:
            assert trial.state == TrialState.COMPLETE and trial.values[1] <= MAX_ACE
            assert record.status in ("ok", "duplicate")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Address of a one-node cluster started with ``ray start --head`` (stopped afterwards:
    only the processes this fixture started, never other Ray instances)."""
    from pikenas.search._ray import ray_environment

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


def test_search_joins_an_existing_cluster(tmp_path: Path, ray_cluster: str) -> None:
    config = tmp_path / "search.yaml"
    config.write_text(SMALL_CONFIG)
    command = [PIKENAS, "search", str(config), "--out", str(tmp_path / "run"), "--trials", "4"]
    command += ["--backend", "ray", "--address", ray_cluster, "--workers", "2"]
    command += ["--evaluator", FAKE, "--full-train-top", "0", "--no-export"]
    done = subprocess.run(command, env=fake_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 COMPLETE trials" in done.stdout
    study = open_study(tmp_path / "run")
    assert Counter(t.state for t in study.trials)[TrialState.COMPLETE] == 4
    assert len(worker_reports(study)) == 2
