"""Command-line checks of the distributed options (in-process, no Ray, no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pikenas.results.record import StudyRecord
from pikenas.search.cli import main
from tests.search_tests.conftest import SMALL_CONFIG as CONFIG
from tests.search_tests.fakes import FAKE


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--address", "127.0.0.1:6379"], "--address apply to --backend ray only"),
        (["--cpus-per-trial", "2"], "--cpus-per-trial apply to --backend ray only"),
        (["--backend", "ray", "--cpus-per-trial", "0"], "--cpus-per-trial: Input should be"),
        (["--backend", "ray", "--gpus-per-trial", "-1"], "--gpus-per-trial: Input should be"),
        (["--backend", "ray", "--address", " "], "--address must be HOST:PORT"),
    ],
)
def test_search_refuses_bad_ray_options_before_creating_anything(
    tmp_path: Path,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    out = tmp_path / "run"
    code = main(["search", str(config_file), "--out", str(out), *options])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_ray_options_reach_the_request(config_file: Path, tmp_path: Path) -> None:
    from pikenas.search.cli._search import _build_request

    request = _build_request(
        str(config_file),
        out=str(tmp_path / "run"),
        study="pikenas",
        storage=None,
        workers=3,
        backend="ray",
        ray={"address": "10.0.0.1:6379", "cpus_per_trial": 4, "gpus_per_trial": 0.5},
        evaluator=FAKE,
        heartbeat_interval=5.0,
        stale_after=60.0,
        overrides={"trials": 5},
    )
    assert request.backend == "ray" and request.workers == 3 and request.n_trials == 5
    assert request.ray.model_dump() == {
        "address": "10.0.0.1:6379",
        "cpus_per_trial": 4,
        "gpus_per_trial": 0.5,
    }
    assert request.worker.storage.kind == "journal"  # parsed once, carried typed
    assert request.worker.storage.path == tmp_path / "run" / "study.log"
    assert request.worker.evaluator == FAKE and request.worker.seed == 0
    assert not (tmp_path / "run").exists()  # building a request creates nothing


def test_worker_fills_a_journal_study(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna
    from optuna.trial import TrialState

    journal = tmp_path / "shared.log"
    argv = ["worker", str(config_file), "--storage", str(journal), "--study", "s"]
    assert main([*argv, "--trials", "3", "--evaluator", FAKE]) == 0
    assert "study 's' holds 3 COMPLETE trials (0 running)" in capsys.readouterr().out

    study = optuna.load_study(
        study_name="s",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal))
        ),
    )
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    record = StudyRecord.of(study)
    assert record.search_config and record.cost_table == "ace_v2" and record.dataset == "digits"
    # Rerunning with a larger N resumes the same study.
    assert main([*argv, "--trials", "4", "--evaluator", FAKE]) == 0
    assert "holds 4 COMPLETE trials" in capsys.readouterr().out


def test_worker_refuses_a_study_made_with_another_config(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--storage", str(tmp_path / "shared.log"), "--study", "s", "--evaluator", FAKE]
    assert main(["worker", str(config_file), *options, "--trials", "1"]) == 0
    other = tmp_path / "other.yaml"
    other.write_text(CONFIG.replace("[8, 16]", "[8, 24]"))
    capsys.readouterr()
    assert main(["worker", str(other), *options, "--trials", "2"]) == 2
    assert "was created with another search config" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--trials", "0"], "--trials: Input should be greater than or equal to 1"),
        (["--threads", "0"], "--threads 0: give 1 to"),
        (["--heartbeat-interval", "5", "--stale-after", "6"], "must exceed twice"),
        (["--sampler", "annealing"], "unknown sampler 'annealing'"),
    ],
)
def test_worker_refuses_bad_options(
    tmp_path: Path,
    config_file: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    journal = tmp_path / "shared.log"
    code = main(["worker", str(config_file), "--storage", str(journal), *options])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not journal.exists()


def test_worker_reports_an_unreachable_database_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql+psycopg2://pikenas:secret-word@127.0.0.1:1/pikenas"
    assert main(["worker", "--storage", url, "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pikenas: error: PostgreSQL at postgresql+psycopg2://pikenas:***@")
    assert "secret-word" not in err
    assert len(err.strip().splitlines()) == 1
