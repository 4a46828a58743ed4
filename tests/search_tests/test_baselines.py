"""Zoo baselines in a study: exactly their zoo models (the archid and ACE v2 of ``pikenas ace
NAME``), evaluated even outside the space, always trained to the top rung and counted as such
in the exactly-N accounting (fake training, milliseconds)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState
from typer.testing import CliRunner

from pikenas.results.record import TrialRecord
from pikenas.results.storage import open_storage
from pikenas.search._journal import buffered
from pikenas.search.cli import app
from pikenas.search.config import SearchConfig, SearchSettings, baseline_arch, load_config
from pikenas.search.halving import FidelityConfig, at_chance
from pikenas.search.loop import work
from pikenas.search.samplers import make_sampler
from pikenas.search.study import open_search_study
from pikenas.space.zoo.catalog import get_zoo_arch
from tests.search_tests.fakes import FakeEvaluator, FakeTraining
from tests.search_tests.test_loop import small_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

FIDELITY = FidelityConfig(rungs=(1, 3, 9), reduction=3)


def _study(tmp_path: Path, config: SearchConfig) -> optuna.Study:
    storage = buffered(open_storage(tmp_path, create=True))
    sampler = make_sampler(config.search.sampler, 0, config.search.population_size)
    return open_search_study(config, storage, "pikenas", sampler)


def _baselines(study: optuna.Study) -> dict[str, tuple[optuna.trial.FrozenTrial, TrialRecord]]:
    found = {}
    for trial in study.get_trials(deepcopy=False):
        record = TrialRecord.of(trial)
        if record.baseline is not None:
            found[record.baseline] = (trial, record)
    return found


def test_a_baseline_is_exactly_its_zoo_model_as_pikenas_ace_costs_it(tmp_path: Path) -> None:
    base = load_config()  # digits: the tiny nets' skeleton and geometry
    names = ("tiny-w8a8", "tiny-binary")
    config = SearchConfig(
        space=base.space,
        baselines=names,
        search=SearchSettings(sampler="random", population_size=4),
    )
    study = _study(tmp_path, config)
    work(study, config.space, FakeTraining(config.evaluator_setup()), 3)
    found = _baselines(study)
    assert set(found) == set(names)
    for name in names:
        trial, record = found[name]
        assert trial.state == TrialState.COMPLETE and record.status == "ok"
        ace = json.loads(CliRunner().invoke(app, ["ace", name, "--json"]).stdout)
        assert record.archid == ace["archid"] == get_zoo_arch(name).archid
        assert record.ace_v2 == ace["ace_v2"] == trial.values[1]


def test_a_baseline_outside_the_space_is_evaluated_as_its_zoo_model(tmp_path: Path) -> None:
    """small_space has two blocks, the tiny nets four: no genome encodes them, yet the trial
    evaluates the zoo model itself (not the default genome that stands for it)."""
    space = small_space()
    config = SearchConfig(
        space=space,
        baselines=("tiny-w4a4",),
        search=SearchSettings(sampler="random", population_size=4),
    )
    zoo = baseline_arch("tiny-w4a4", space)
    assert zoo.archid != space.decode(space.default_params()).archid
    study = _study(tmp_path, config)
    evaluator = FakeEvaluator()
    work(study, space, evaluator, 2)
    trial, record = _baselines(study)["tiny-w4a4"]
    assert trial.state == TrialState.COMPLETE
    assert record.archid == zoo.archid and len(json.loads(record.arch)["blocks"]) == 4
    assert record.ace_v2 == evaluator.cost(zoo).ace_v2 == trial.values[1]


def test_a_baseline_is_trained_to_the_top_rung_and_counts_in_exactly_n(tmp_path: Path) -> None:
    """The baseline learns nothing (chance level at the first rung: "does not learn" stops any
    other candidate there), yet it is promoted at every rung; the study still ends with exactly
    N COMPLETE trials, the baseline one of them."""
    space = small_space()
    zoo = baseline_arch("tiny-w8a8", space)
    config = SearchConfig(
        space=space,
        fidelity=FIDELITY,
        baselines=("tiny-w8a8",),
        search=SearchSettings(sampler="nsga2", population_size=4),
    )
    study = _study(tmp_path, config)
    evaluator = FakeEvaluator(top=9, dead_when=lambda arch: arch.archid == zoo.archid)
    n_trials = 4
    work(study, space, evaluator, n_trials, fidelity=FIDELITY, checkpoints=tmp_path / "ck")
    trial, record = _baselines(study)["tiny-w8a8"]
    assert trial.state == TrialState.COMPLETE and record.status == "ok"
    assert [rung.epochs for rung in record.rungs] == [1, 3, 9]
    assert [rung.decision for rung in record.rungs] == ["promoted", "promoted", "top"]
    first = record.rungs[0]  # at chance: another trial would stop here
    assert at_chance(first.val_accuracy, 10, first.val_images) and first.rank is None
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] == n_trials and states[TrialState.RUNNING] == 0


def test_dead_candidates_still_stop_at_the_first_rung(tmp_path: Path) -> None:
    """The control of the test above: the same dead architecture, enqueued as an ordinary
    genome (no baseline), is stopped at the first rung."""
    space = small_space()
    config = SearchConfig(
        space=space, fidelity=FIDELITY, search=SearchSettings(sampler="random", population_size=4)
    )
    study = _study(tmp_path, config)
    dead = space.decode(space.default_params())
    study.enqueue_trial(space.default_params())
    evaluator = FakeEvaluator(top=9, dead_when=lambda arch: arch.archid == dead.archid)
    work(study, space, evaluator, 2, fidelity=FIDELITY, checkpoints=tmp_path / "ck")
    first = TrialRecord.of(study.trials[0])
    assert study.trials[0].state == TrialState.PRUNED and first.status == "stopped"
    assert first.reason.startswith("does not learn")


def test_a_running_baseline_holds_its_place_among_the_n(tmp_path: Path) -> None:
    """N = 1 and two workers: the first runs the (slow) baseline, which counts as finishing
    from the moment it runs, so the second worker asks for no trial that could make it N + 1."""
    import threading

    from pikenas.search.lock import FileLock

    space = small_space()
    config = SearchConfig(
        space=space,
        fidelity=FIDELITY,
        baselines=("tiny-w8a8",),
        search=SearchSettings(sampler="random", population_size=4),
    )
    _study(tmp_path, config)

    def run(seed: int, delay_s: float) -> None:
        storage = buffered(open_storage(tmp_path))
        sampler = make_sampler("random", seed, 4)
        mine = optuna.load_study(study_name="pikenas", storage=storage, sampler=sampler)
        lock = FileLock(tmp_path / "study.log.ask-lock")
        try:
            work(mine, space, FakeEvaluator(delay_s, top=9), 1, fidelity=FIDELITY, ask_lock=lock)
        finally:
            lock.close()

    first = threading.Thread(target=run, args=(1, 0.1))
    first.start()
    reader = optuna.load_study(study_name="pikenas", storage=open_storage(tmp_path))
    while first.is_alive() and not reader.get_trials(states=(TrialState.RUNNING,)):
        first.join(timeout=0.005)  # the baseline runs: now the second worker starts
    second = threading.Thread(target=run, args=(2, 0.0))
    second.start()
    first.join()
    second.join()
    study = optuna.load_study(study_name="pikenas", storage=open_storage(tmp_path))
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] == 1 and len(study.trials) == 1
    assert TrialRecord.of(study.trials[0]).baseline == "tiny-w8a8"
