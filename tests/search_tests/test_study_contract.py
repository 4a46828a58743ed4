"""The study contract: docs/study_contract.md shows exactly the typed records, the records map
to and from Optuna's attributes, and a search writes nothing outside them."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import optuna
import pytest

from pikenas.results.record import (
    TRIAL_STATUSES,
    StudyRecord,
    TrialRecord,
    contract_tables,
    worker_reports,
)
from pikenas.results.storage import open_storage
from pikenas.search._journal import buffered
from pikenas.search.config import SearchConfig, SearchSettings
from pikenas.search.loop import work
from pikenas.search.samplers import make_sampler
from pikenas.search.study import open_search_study
from pikenas.space.searchspace import SearchSpace, StageSpace
from tests.search_tests.fakes import FakeEvaluator

ROOT = Path(__file__).resolve().parents[2]


def test_the_document_shows_exactly_the_records() -> None:
    text = (ROOT / "docs" / "study_contract.md").read_text()
    match = re.search(
        r"<!-- contract tables.*?-->\n(.*)<!-- end of contract tables -->", text, re.S
    )
    assert match is not None, "the generated section's markers are missing"
    assert match.group(1) == contract_tables()


def test_trial_record_round_trips_and_reads_old_studies_leniently(
    caplog: pytest.LogCaptureFixture,
) -> None:
    record = TrialRecord(archid="ab", ace_v2=12.5, macs=3, status="duplicate", duplicate_of=2)
    assert record.to_attrs() == {
        "archid": "ab", "ace_v2": 12.5, "macs": 3, "status": "duplicate", "duplicate_of": 2,
    }  # fmt: skip
    assert TrialRecord.from_attrs(record.to_attrs()) == record
    with caplog.at_level(logging.WARNING):
        odd = TrialRecord.from_attrs({"macs": 7, "status": "exploded", "from_the_future": 1})
    assert odd == TrialRecord(macs=7) and "unreadable status" in caplog.text


def test_a_search_writes_nothing_outside_the_records(tmp_path: Path) -> None:
    space = SearchSpace(stages=(StageSpace(blocks=1, stride=1, channels=(8, 16)),))
    config = SearchConfig(
        space=space, max_ace=3000.0, search=SearchSettings(sampler="random", population_size=4)
    )
    storage = buffered(open_storage(tmp_path, create=True))
    study = open_search_study(config, storage, "pikenas", make_sampler("random", 0, 4))
    report = work(study, space, FakeEvaluator(), 12, max_ace=config.max_ace)
    assert report.complete == 12
    study = optuna.load_study(study_name="pikenas", storage=open_storage(tmp_path))
    # all but the results of full training, which comes later
    assert set(study.user_attrs) == set(StudyRecord.model_fields) - {"final_results", "kendall_tau"}
    assert study.metric_names == ["accuracy", "ace_v2 (bit-ops)"]
    statuses = set()
    for trial in study.trials:
        assert set(trial.user_attrs) <= set(TrialRecord.model_fields), trial.user_attrs
        assert set(trial.system_attrs) <= {"pikenas:heartbeat", "fixed_params"}
        statuses.add(TrialRecord.of(trial).status)
    assert statuses <= set(TRIAL_STATUSES) and "over_budget" in statuses
    assert list(worker_reports(study).values()) == [report]
