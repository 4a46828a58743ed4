"""The throw-away PostgreSQL server holds an Optuna study across connections."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_study_written_by_one_storage_is_read_by_another(postgres_url: str) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=postgres_url, study_name="fixture", directions=["maximize", "minimize"]
    )
    study.optimize(lambda trial: (trial.suggest_int("x", 0, 3), 2.0), n_trials=3)

    loaded = optuna.load_study(study_name="fixture", storage=postgres_url)
    assert [t.state for t in loaded.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert loaded.directions == study.directions
    assert postgres_url.startswith("postgresql+psycopg2://")


def test_each_test_gets_an_empty_database(postgres_url: str) -> None:
    import optuna

    assert optuna.get_all_study_names(storage=postgres_url) == []
