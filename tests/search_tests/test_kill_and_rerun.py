"""The promise of ``--trials N``, on every backend: SIGKILL in the middle, rerun the same
command, and the study holds exactly N COMPLETE trials, none RUNNING, no architecture trained
twice, and every trial the kill left running failed (its worker is gone) and its candidate
retried.

Backends: the local backend on the run's journal file and on SQLite, two ``pikenas worker``
processes on a journal file and on PostgreSQL, and the Ray backend (a local Ray). Every process
is real, with the tests' fake evaluator (a second a trial in the killed run). Each backend runs a
fixed-budget search and one with successive halving (``fidelity: rungs [1, 3, 9]``): then N
trials reach the top rung, every stopped trial keeps its rung results, and no architecture's
epoch is trained twice (the fake's ledger beside its checkpoints).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from pikenas.results.record import TrialRecord
from pikenas.results.storage import open_study
from tests.search_tests.conftest import PIKENAS, SMALL_CONFIG, fake_env
from tests.search_tests.fakes import FAKE, LEDGER

pytestmark = pytest.mark.slow

N = 10
BACKENDS = [
    "local-journal",
    "local-sqlite",
    "workers-journal",
    pytest.param("workers-postgres", marks=pytest.mark.postgres),
    "ray",
]


def _storage(backend: str, run: Path, request: pytest.FixtureRequest) -> str:
    if backend == "local-sqlite":
        return f"sqlite:///{run / 'study.db'}"
    if backend == "workers-postgres":
        return request.getfixturevalue("postgres_url")
    return str(run / "study.log")


FIDELITY = "fidelity: {rungs: [1, 3, 9], reduction: 3}\n"


def _checkpoints(backend: str, run: Path) -> Path:
    """Where the run keeps its proxy checkpoints (and the fake its ledger)."""
    if backend.startswith("workers-"):
        return run.parent / "checkpoints" / "pikenas"
    return run / "checkpoints" / "pikenas"


def _commands(backend: str, config: Path, run: Path, storage: str) -> list[list[str]]:
    common = [str(config), "--trials", str(N), "--evaluator", FAKE]
    common += ["--heartbeat-interval", "1", "--stale-after", "30"]
    if backend.startswith("workers-"):
        folder = str(_checkpoints(backend, run).parent)
        return [
            [PIKENAS, "worker", *common, "--storage", storage, "--seed", str(seed)]
            + ["--checkpoints", folder]
            for seed in (1, 2)
        ]
    search = [PIKENAS, "search", *common, "--out", str(run), "--workers", "2"]
    search += ["--storage", storage, "--full-train-top", "0", "--no-export"]
    return [search + (["--backend", "ray"] if backend == "ray" else [])]


def _ready(storage: str) -> bool:
    """Whether the run has created its storage (a reader must not race it creating tables)."""
    if "://" not in storage:
        return Path(storage).is_file()
    from sqlalchemy import create_engine, inspect

    engine = create_engine(storage)
    try:
        return inspect(engine).has_table("alembic_version")  # Optuna stamps it last
    except Exception:  # noqa: BLE001 - the SQLite file does not exist yet
        return False
    finally:
        engine.dispose()


def _counts(storage: str) -> Counter[str]:
    """Trials by state, and ``training``: RUNNING ones that have their architecture (claimed,
    so killing now leaves a candidate mid-training)."""
    if not _ready(storage):
        return Counter()
    try:
        study = open_study(storage)
    except Exception:  # noqa: BLE001 - the study is not created yet
        return Counter()
    trials = study.get_trials(deepcopy=False)
    counts = Counter(trial.state.name for trial in trials)
    counts["training"] = sum(
        1 for t in trials if t.state == TrialState.RUNNING and "arch" in t.user_attrs
    )
    return counts


def _kill_mid_run(commands: list[list[str]], storage: str) -> None:
    processes = [
        subprocess.Popen(
            command,
            env=fake_env(1.0),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for command in commands
    ]
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            counts = _counts(storage)
            if counts["COMPLETE"] >= 3 and counts["training"] >= 1:
                break
            assert all(process.poll() is None for process in processes), "a run ended early"
            time.sleep(0.2)
        else:
            pytest.fail("the run did not get going")
    finally:
        for process in processes:
            process.send_signal(signal.SIGKILL)  # the driver / worker only, as a crash would
        for process in processes:
            process.wait(timeout=30)
    time.sleep(2.0)  # local workers die with their parent, Ray actors with their driver
    for process in processes:  # what a killed Ray driver leaves (its agents), never others
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _logs(run: Path) -> str:
    """The local workers' logs, for a failure's message."""
    logs = sorted((run / "logs").glob("*.log")) if (run / "logs").is_dir() else []
    return "\n".join(f"{log.name}: {log.read_text()[-3000:]}" for log in logs)


@pytest.mark.parametrize("rungs", [False, True], ids=["fixed", "rungs"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_mid_run_then_rerun_ends_with_exactly_n(
    backend: str, rungs: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    config = tmp_path / "search.yaml"
    # random genomes: few duplicates, so the run still has work when it is killed
    text = SMALL_CONFIG.replace("population_size: 4", "sampler: random")
    config.write_text(text + (FIDELITY if rungs else ""))
    run = tmp_path / "run"
    storage = _storage(backend, run, request)
    commands = _commands(backend, config, run, storage)
    _kill_mid_run(commands, storage)
    killed = open_study(storage)
    left_running = [t.number for t in killed.trials if t.state == TrialState.RUNNING]
    assert left_running and _counts(storage)["COMPLETE"] < N

    reruns = [
        subprocess.Popen(
            command, env=fake_env(0.0), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for command in commands
    ]
    for process in reruns:
        _, err = process.communicate(timeout=240)
        assert process.returncode == 0, err[-2000:]

    study = open_study(storage)
    states = Counter(trial.state for trial in study.trials)
    assert states[TrialState.COMPLETE] == N and states[TrialState.RUNNING] == 0, _logs(run)
    records = {trial.number: TrialRecord.of(trial) for trial in study.trials}
    trained = [record.archid for record in records.values() if record.status == "ok"]
    assert len(trained) == len(set(trained)), "an architecture was trained twice"
    for number in left_running:
        trial = study.trials[number]
        if backend == "ray" and trial.state == TrialState.COMPLETE:
            continue  # its actor outlived the killed driver by a moment and finished it
        assert trial.state == TrialState.FAIL
        # its worker's pid is dead (or it died before it could record itself on the trial)
        gone = "is gone" if records[number].worker else "between asking for it and recording"
        assert gone in records[number].reason
        retries = [t for t in study.trials if records[t.number].retry_of == number]
        # a candidate is retried once it had its architecture (killed while sampling: not)
        expected = [trial.params] if records[number].arch is not None else []
        assert [t.params for t in retries] == expected, _logs(run)
    if rungs:
        _check_rungs(study, records, _checkpoints(backend, run) / LEDGER)


def _check_rungs(study, records: dict[int, TrialRecord], ledger: Path) -> None:  # noqa: ANN001
    """N trials reached the top rung, the stopped ones hold their rungs, and every
    architecture's epochs were trained once, each rung continuing from its checkpoint."""
    for trial in study.trials:
        record = records[trial.number]
        if record.status == "ok":
            assert [rung.epochs for rung in record.rungs] == [1, 3, 9]
        elif record.status == "stopped":
            assert trial.state == TrialState.PRUNED
            assert record.rungs or record.duplicate_of is not None
            assert record.rungs is None or record.rungs[-1].decision == "stopped"
    spans: dict[str, list[tuple[int, int]]] = {}
    for line in ledger.read_text().splitlines():
        entry = json.loads(line)
        spans.setdefault(entry["archid"], []).append((entry["start"], entry["stop"]))
    assert spans
    for archid, parts in spans.items():
        trained = sum(stop - start for start, stop in parts)
        assert trained == max(stop for _, stop in parts), f"{archid}: {parts}"
