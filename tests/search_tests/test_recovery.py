"""Recovery of dead workers' trials is crash-safe: the fixed parameters of an enqueued trial
survive a kill before its worker wrote them, and a recovering worker killed between failing a
trial and enqueueing its retry leaves the retry to the next one."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from optuna.trial import TrialState

import pikenas.search.loop as loop
from pikenas.results.record import TrialRecord
from pikenas.search.loop import recover_stale_trials
from tests.search_tests.test_loop import make_study, small_space

DEAD = f"{socket.gethostname()}:{2**22 + 4321}"  # above Linux's pid_max default


def _orphan_of_an_enqueued_genome(tmp_path: Path):  # noqa: ANN202 - (study, genome)
    study = make_study(tmp_path)
    genome = {name: choices[0] for name, choices in small_space().distributions().items()}
    study.enqueue_trial(genome, user_attrs={"baseline": "tiny-w8a8"})
    trial = study.ask()  # asked, labelled, killed before any parameter was written
    study._storage.set_trial_user_attr(trial._trial_id, "worker", DEAD)
    study._storage.flush()
    assert study.trials[trial.number].params == {}
    return study, genome


def test_an_enqueued_trial_killed_before_its_parameters_is_retried(tmp_path: Path) -> None:
    study, genome = _orphan_of_an_enqueued_genome(tmp_path)
    assert recover_stale_trials(study, stale_after=60) == [0]
    retry = study.trials[1]
    assert retry.state == TrialState.WAITING and retry.system_attrs["fixed_params"] == genome
    assert TrialRecord.of(retry).retry_of == 0 and TrialRecord.of(retry).baseline == "tiny-w8a8"


def test_a_kill_between_fail_and_retry_leaves_the_retry_to_the_next_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, genome = _orphan_of_an_enqueued_genome(tmp_path)

    def killed(*_: object) -> None:
        raise SystemExit("killed between FAIL and the retry")

    monkeypatch.setattr(loop, "_enqueue_retry", killed)
    with pytest.raises(SystemExit):
        recover_stale_trials(study, stale_after=60)
    monkeypatch.undo()
    assert study.trials[0].state == TrialState.FAIL and len(study.trials) == 1
    assert recover_stale_trials(study, stale_after=60) == []  # nothing stale any more ...
    assert [TrialRecord.of(t).retry_of for t in study.trials] == [None, 0]  # ... but retried
    recover_stale_trials(study, stale_after=60)
    assert len(study.trials) == 2  # once


def test_retries_stop_after_max_retries(tmp_path: Path) -> None:
    study, _ = _orphan_of_an_enqueued_genome(tmp_path)
    for attempt in range(loop.MAX_RETRIES + 1):
        recover_stale_trials(study, stale_after=60)
        waiting = [t for t in study.trials if t.state == TrialState.WAITING]
        if attempt == loop.MAX_RETRIES:
            assert waiting == []
            break
        trial = study.ask()
        study._storage.set_trial_user_attr(trial._trial_id, "worker", DEAD)
    assert len(study.trials) == loop.MAX_RETRIES + 1
