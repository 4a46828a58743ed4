"""The one trial loop (:func:`search.loop.work`) with the zero-cost fake evaluator
(milliseconds a trial), on a real journal storage and a study made by :mod:`search.study`."""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pikenas.evaluators.candidate import evaluate_candidate
from pikenas.results.record import DIRECTIONS, HEARTBEAT_ATTR, TrialRecord, worker_reports
from pikenas.results.storage import open_storage
from pikenas.search._journal import BufferedJournalStorage, buffered
from pikenas.search.config import SearchConfig, SearchSettings
from pikenas.search.lock import FileLock, ask_lock
from pikenas.search.loop import recover_stale_trials, stale_reason, work
from pikenas.search.samplers import SAMPLERS, make_sampler
from pikenas.search.study import open_search_study
from pikenas.search.trial import outcome_of
from pikenas.space.arch import ArchConfig
from pikenas.space.searchspace import BlockChoices, SearchSpace, StageSpace
from tests.search_tests.fakes import FakeEvaluator

optuna.logging.set_verbosity(optuna.logging.WARNING)


def small_space(**choices: object) -> SearchSpace:
    """Two blocks (8x8 -> 8 -> 4), 2 + 2 x 10 genes."""
    return SearchSpace(
        stages=(
            StageSpace(blocks=1, stride=1, channels=(8, 16)),
            StageSpace(blocks=1, stride=2, channels=(8, 16)),
        ),
        choices=BlockChoices(**choices),
    )


def few_archs_space(activation_bits: tuple[int, ...] = (8,)) -> SearchSpace:
    """:func:`small_space` with one choice per gene but channels (2 x 2) and activation bits."""
    return small_space(
        kernel_size=(3,),
        dw_quantizer=("uniform",),
        pw_quantizer=("uniform",),
        dw_bits=(4,),
        pw_bits=(4,),
        activation_bits=activation_bits,
        activation=("relu",),
        norm=("batchnorm",),
        scale_format=("float32",),
        residual=(False,),
    )


def make_study(
    tmp_path: Path, sampler: str = "nsga2", seed: int = 0, space: SearchSpace | None = None
) -> optuna.Study:
    """The study a worker opens: created by search.study on the run's buffered journal."""
    config = SearchConfig(
        space=space or small_space(), search=SearchSettings(sampler=sampler, population_size=4)
    )
    storage = buffered(open_storage(tmp_path, create=True))
    return open_search_study(config, storage, "pikenas", make_sampler(sampler, seed, 4))


def states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def test_exactly_n_complete_with_the_contract_attrs(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    evaluator = FakeEvaluator()
    summary = work(study, small_space(), evaluator, 10)
    assert states(study) == {"COMPLETE": 10}
    assert summary.complete == 10
    assert [d.name.lower() for d in study.directions] == list(DIRECTIONS)
    for trial in study.trials:
        attrs = trial.user_attrs
        arch = ArchConfig.from_json(attrs["arch"])
        assert attrs["archid"] == arch.archid
        cost = evaluator.cost(arch)
        assert trial.values[1] == attrs["ace_v2"] == cost.ace_v2
        assert attrs["ace_v1"] == cost.ace_v1 and attrs["macs"] == cost.macs
        assert 0 <= attrs["elementwise_share"] <= 1
        assert attrs["worker"] == f"{socket.gethostname()}:{os.getpid()}"
        assert attrs["status"] in ("ok", "duplicate")
        if attrs["status"] == "ok":
            assert trial.values[0] == attrs["val_accuracy"]
            for key in ("test_accuracy", "val_loss", "proxy_wall_s", "images_per_s"):
                assert key in attrs
        assert len(trial.params) == 22  # fixed length: every trial has every gene


def test_duplicates_reuse_the_values_and_are_not_trained(tmp_path: Path) -> None:
    space = few_archs_space(activation_bits=(2, 8))  # 16 architectures, many duplicates
    study = make_study(tmp_path, sampler="random", space=space)
    evaluator = FakeEvaluator()
    work(study, space, evaluator, 20)
    trials = study.trials
    assert states(study) == {"COMPLETE": 20}
    ok = [t for t in trials if t.user_attrs["status"] == "ok"]
    duplicates = [t for t in trials if t.user_attrs["status"] == "duplicate"]
    assert len(ok) <= 16 and duplicates
    assert evaluator.proxy_calls == len(ok)
    assert len({t.user_attrs["archid"] for t in ok}) == len(ok)
    for trial in duplicates:
        original = trials[trial.user_attrs["duplicate_of"]]
        assert original.user_attrs["status"] == "ok"
        assert original.user_attrs["archid"] == trial.user_attrs["archid"]
        assert original.values == trial.values


def test_over_budget_candidates_are_pruned_untrained_with_a_reason(tmp_path: Path) -> None:
    space = small_space()
    evaluator = FakeEvaluator()
    rng = random.Random(0)
    costs = sorted(
        evaluator.cost(
            space.decode({n: rng.choice(c) for n, c in space.distributions().items()})
        ).ace_v2
        for _ in range(50)
    )
    max_ace = costs[len(costs) // 2]  # about half the candidates are over budget
    study = make_study(tmp_path, sampler="random")
    work(study, space, evaluator, 5, max_ace=max_ace)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 5 and pruned
    assert evaluator.proxy_calls == sum(1 for t in complete if t.user_attrs["status"] == "ok")
    for trial in pruned:
        assert trial.values is None
        assert trial.user_attrs["status"] == "over_budget"
        assert trial.user_attrs["ace_v2"] > max_ace
        assert "over max_ace" in trial.user_attrs["reason"]
    assert all(t.values[1] <= max_ace for t in complete)


def test_failing_candidates_fail_and_the_search_goes_on(tmp_path: Path) -> None:
    def fails(arch: ArchConfig) -> bool:
        return arch.blocks[0].out_channels == 8

    study = make_study(tmp_path, sampler="random")
    summary = work(study, small_space(), FakeEvaluator(fail_when=fails), 8)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert states(study)["COMPLETE"] == 8
    assert failed and summary.failed == len(failed)
    for trial in failed:
        assert trial.user_attrs["status"] == "failed"
        assert trial.user_attrs["reason"].startswith("EvaluationError: fake evaluator")
        assert "arch" in trial.user_attrs  # it got as far as an architecture


def test_a_search_where_everything_is_rejected_gives_up(tmp_path: Path) -> None:
    study = make_study(tmp_path, sampler="random")
    summary = work(study, small_space(), FakeEvaluator(), 1, max_ace=1.0)
    assert summary.gave_up is not None and "rejected" in summary.gave_up
    assert worker_reports(study)[summary.label].gave_up == summary.gave_up
    assert states(study) == {"PRUNED": 60}


def test_resume_continues_to_n(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    work(study, small_space(), FakeEvaluator(), 4)
    study = make_study(tmp_path)  # a new process would reopen it like this
    work(study, small_space(), FakeEvaluator(), 9)
    assert states(study) == {"COMPLETE": 9}
    work(study, small_space(), FakeEvaluator(), 9)  # nothing left to do
    assert states(study) == {"COMPLETE": 9}


def test_dead_workers_trials_are_failed_and_their_genome_retried(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    space = small_space()
    genome = {name: choices[-1] for name, choices in space.distributions().items()}
    # a trial "run" by a process of this host that no longer exists
    study.enqueue_trial(genome, user_attrs={"baseline": "tiny-w8a8"})
    orphan = study.ask()
    arch = space.suggest(orphan)
    dead_pid = 2**22 + 12345  # above Linux's pid_max default
    for key, value in {
        "worker": f"{socket.gethostname()}:{dead_pid}",
        "arch": arch.to_json(),
    }.items():
        study._storage.set_trial_user_attr(orphan._trial_id, key, value)  # claimed, then died
    frozen = study.trials[orphan.number]
    assert "is gone" in stale_reason(frozen, stale_after=60)

    summary = work(study, space, FakeEvaluator(), 3)
    trials = study.trials
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["status"] == "failed"
    assert f":{dead_pid} is gone" in trials[0].user_attrs["reason"]
    assert summary.recovered == (0,)
    assert worker_reports(study)[summary.label] == summary  # the report is in the study
    retry = trials[1]
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["baseline"] == "tiny-w8a8"
    assert retry.params == genome and retry.state == TrialState.COMPLETE
    assert states(study) == {"FAIL": 1, "COMPLETE": 3}


def test_silent_trials_of_other_hosts_go_stale_after_the_timeout(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, "worker", "elsewhere:1")
    frozen = study.trials[0]
    assert stale_reason(frozen, stale_after=60) is None  # just started: alive
    assert "no heartbeat from worker elsewhere:1" in stale_reason(frozen, stale_after=-1)
    assert recover_stale_trials(study, stale_after=60) == []
    assert recover_stale_trials(study, stale_after=-1) == [0]
    assert recover_stale_trials(study, stale_after=-1) == []  # failed once only
    unlabelled = study.ask()  # under the ask lock every worker labels its trial at once
    assert stale_reason(study.trials[1], stale_after=60) is None
    assert "recording itself" in stale_reason(study.trials[1], stale_after=60, locked=True)
    assert recover_stale_trials(study, stale_after=60, locked=True) == [unlabelled.number]
    assert study.trials[0].state == TrialState.FAIL
    # they never got as far as an architecture, so there is no candidate to enqueue again
    assert len(study.trials) == 2


def test_evaluate_candidate_turns_any_exception_into_fail() -> None:
    class Broken(FakeEvaluator):
        def cost(self, arch: ArchConfig):  # type: ignore[override]
            raise MemoryError("out of memory")

    space = small_space()
    outcome = outcome_of(evaluate_candidate(space.decode(space.default_params()), Broken()))
    assert outcome.state == TrialState.FAIL
    assert outcome.record.reason == "MemoryError: out of memory"


def test_non_finite_metrics_fail() -> None:
    class NaN(FakeEvaluator):
        def proxy(self, arch: ArchConfig):  # type: ignore[override]
            metrics = super().proxy(arch)
            return type(metrics)(float("nan"), 0.5, float("nan"), 0.0, 0.0)

    space = small_space()
    outcome = outcome_of(evaluate_candidate(space.decode(space.default_params()), NaN()))
    assert outcome.state == TrialState.FAIL and "non-finite" in outcome.record.reason


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.slow) if name == "gp" else name  # GP fit: ~15 s
        for name in SAMPLERS.names()
    ],
)
def test_every_sampler_searches_the_space(tmp_path: Path, name: str) -> None:
    study = make_study(tmp_path, sampler=name)
    study.enqueue_trial(small_space().default_params())  # a fixed point first
    # population / startup size is 4: the fifth trial is the sampler's own proposal
    work(study, small_space(), FakeEvaluator(), 5)
    assert states(study) == {"COMPLETE": 5}
    assert study.trials[0].params == small_space().default_params()


def test_buffered_journal_writes_reach_other_readers(tmp_path: Path) -> None:
    storage = open_storage(tmp_path, create=True)
    writer = buffered(storage)
    assert isinstance(writer, BufferedJournalStorage) and buffered(writer) is writer
    study = optuna.create_study(study_name="s", storage=writer, directions=list(DIRECTIONS))
    trial = study.ask()
    trial.suggest_categorical("a", [1, 2])
    trial.set_user_attr("k", "v")
    lines_before = (tmp_path / "study.log").read_text().count("\n")
    writer.flush()
    assert (tmp_path / "study.log").read_text().count("\n") == lines_before + 2
    reader = optuna.load_study(study_name="s", storage=open_storage(tmp_path))
    seen = reader.trials[0]
    assert "a" in seen.params and seen.user_attrs == {"k": "v"}
    study.tell(trial, [0.5, 10.0])  # tell flushes too
    assert optuna.load_study(study_name="s", storage=open_storage(tmp_path)).trials[0].values


def test_file_lock_is_exclusive(tmp_path: Path) -> None:
    import fcntl

    path = tmp_path / "x.lock"
    with FileLock(path):
        fd = os.open(path, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    with FileLock(path):
        pass


def test_two_workers_share_a_study_exactly_and_never_train_an_archid_twice(
    tmp_path: Path,
) -> None:
    """Two workers (threads, each with its own storage and lock, as two processes have) on one
    journal: a space of four architectures, so they keep proposing the same ones at once."""
    space = few_archs_space()
    make_study(tmp_path, sampler="random", space=space)
    evaluators = [FakeEvaluator(delay_s=0.05), FakeEvaluator(delay_s=0.05)]

    def run(index: int) -> None:
        study = make_study(tmp_path, sampler="random", seed=index, space=space)
        lock = ask_lock(tmp_path / "study.log", "pikenas")
        work(study, space, evaluators[index], 12, ask_lock=lock, poll_s=0.01)
        lock.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    study = make_study(tmp_path, space=space)
    assert states(study) == {"COMPLETE": 12}
    trained = [TrialRecord.of(t) for t in study.trials if t.user_attrs["status"] == "ok"]
    assert len({record.archid for record in trained}) == len(trained) <= 4
    assert sum(evaluator.proxy_calls for evaluator in evaluators) == len(trained)
    assert all(evaluator.proxy_calls for evaluator in evaluators)  # both took part


def test_a_trial_waits_for_the_running_trial_that_trains_its_archid(tmp_path: Path) -> None:
    """A RUNNING trial (of a live worker, heartbeat fresh) holds the claim on an archid: a
    second worker proposing the same architecture waits for its values instead of training."""
    space = small_space()
    study = make_study(tmp_path, sampler="random")
    genome = space.default_params()
    arch = space.decode(genome)
    holder = study.ask()
    space.suggest(holder)
    record = outcome_of(evaluate_candidate(arch, FakeEvaluator())).record
    claim = TrialRecord(**{k: v for k, v in record.to_attrs().items() if k != "status"})
    for key, value in {**claim.to_attrs(), "worker": "elsewhere:1"}.items():
        study._storage.set_trial_user_attr(holder._trial_id, key, value)
    study._storage.set_trial_system_attr(holder._trial_id, HEARTBEAT_ATTR, 1e12)  # alive
    study.enqueue_trial(genome)
    evaluator = FakeEvaluator()
    # N = 2: one trial for the holder, one for this worker
    waiter = threading.Thread(target=work, args=(study, space, evaluator, 2), daemon=True)
    waiter.start()
    waiter.join(timeout=1.0)
    assert waiter.is_alive() and evaluator.proxy_calls == 0  # waiting, not training
    assert study.trials[1].state == TrialState.RUNNING
    study._storage.set_trial_user_attr(holder._trial_id, "status", "ok")
    study.tell(holder, [0.75, 100.0])
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    second = study.trials[1]
    assert second.user_attrs["status"] == "duplicate" and second.user_attrs["duplicate_of"] == 0
    assert second.values == [0.75, 100.0] and second.params == genome
    assert states(study) == {"COMPLETE": 2} and evaluator.proxy_calls == 0
