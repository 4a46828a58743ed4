"""The per-trial logic and the worker loop with the zero-cost fake evaluator (milliseconds a
trial), on a real journal storage."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from results.storage import open_storage
from search._journal import BufferedJournalStorage, buffered
from search.objective import DIRECTIONS, FakeEvaluator, evaluate_candidate
from search.samplers import SAMPLERS, make_sampler
from search.worker import FileLock, recover_stale_trials, stale_reason, work
from space.arch import ArchConfig
from space.searchspace import BlockChoices, SearchSpace, StageSpace

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


def make_study(tmp_path: Path, sampler: str = "nsga2", seed: int = 0) -> optuna.Study:
    storage = buffered(open_storage(tmp_path, create=True))
    return optuna.create_study(
        study_name="pikenas",
        storage=storage,
        directions=list(DIRECTIONS),
        sampler=make_sampler(sampler, seed, 4),
        load_if_exists=True,
    )


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
    # 2 channel choices x 2 x (2 activation widths): few distinct archs, many duplicates
    space = small_space(
        kernel_size=(3,),
        dw_quantizer=("uniform",),
        pw_quantizer=("uniform",),
        dw_bits=(4,),
        pw_bits=(4,),
        activation_bits=(2, 8),
        activation=("relu",),
        norm=("batchnorm",),
        scale_format=("float32",),
        residual=(False,),
    )
    study = make_study(tmp_path, sampler="random")
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
    study.enqueue_trial(genome, user_attrs={"baseline": "tiny-x"})
    orphan = study.ask()
    space.suggest(orphan)
    dead_pid = 2**22 + 12345  # above Linux's pid_max default
    study._storage.set_trial_user_attr(
        orphan._trial_id, "worker", f"{socket.gethostname()}:{dead_pid}"
    )
    frozen = study.trials[orphan.number]
    assert "is gone" in stale_reason(frozen, stale_after=60)

    summary = work(study, space, FakeEvaluator(), 3)
    trials = study.trials
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["status"] == "failed"
    assert f":{dead_pid} is gone" in trials[0].user_attrs["reason"]
    assert summary.recovered == [0]
    retry = trials[1]
    assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["baseline"] == "tiny-x"
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
    assert study.trials[0].state == TrialState.FAIL
    # nothing was sampled, so there is nothing to enqueue again
    assert len(study.trials) == 1


def test_evaluate_candidate_turns_any_exception_into_fail() -> None:
    class Broken(FakeEvaluator):
        def cost(self, arch: ArchConfig):  # type: ignore[override]
            raise MemoryError("out of memory")

    space = small_space()
    outcome = evaluate_candidate(space.decode(space.default_params()), Broken())
    assert outcome.state == "FAIL"
    assert outcome.user_attrs["reason"] == "MemoryError: out of memory"


def test_non_finite_metrics_fail() -> None:
    class NaN(FakeEvaluator):
        def proxy(self, arch: ArchConfig):  # type: ignore[override]
            metrics = super().proxy(arch)
            return type(metrics)(float("nan"), 0.5, float("nan"), 0.0, 0.0)

    space = small_space()
    outcome = evaluate_candidate(space.decode(space.default_params()), NaN())
    assert outcome.state == "FAIL" and "non-finite" in outcome.user_attrs["reason"]


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
