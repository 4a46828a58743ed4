"""Pareto successive halving: the config, the rung decision, and the trial loop running it with
the fake evaluator (its checkpoints and ledger say what was trained)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pikenas.results.record import TrialRecord
from pikenas.results.storage import open_storage
from pikenas.results.trials import trials_frame
from pikenas.search._journal import buffered
from pikenas.search.config import SearchConfig, SearchSettings, config_from_dict, load_config
from pikenas.search.halving import FidelityConfig, at_chance, decide
from pikenas.search.loop import work
from pikenas.search.samplers import make_sampler
from pikenas.search.study import open_search_study
from pikenas.space.errors import SearchConfigError
from tests.search_tests.fakes import LEDGER, FakeEvaluator
from tests.search_tests.test_loop import few_archs_space, small_space

optuna.logging.set_verbosity(optuna.logging.WARNING)

FIDELITY = FidelityConfig(rungs=(1, 3, 9), reduction=3)


def fidelity_study(tmp_path: Path, sampler: str = "nsga2", space=None, seed: int = 0):
    config = SearchConfig(
        space=space or small_space(),
        fidelity=FIDELITY,
        search=SearchSettings(sampler=sampler, population_size=4),
    )
    storage = buffered(open_storage(tmp_path, create=True))
    return open_search_study(config, storage, "pikenas", make_sampler(sampler, seed, 4))


def ledger(tmp_path: Path) -> list[dict]:
    path = tmp_path / "ck" / "pikenas" / LEDGER
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


# ---- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("rungs", [[3], [1, 1, 3], [3, 1], [0, 2]])
def test_rungs_must_be_increasing_epochs(rungs: list[int]) -> None:
    data = load_config().to_dict()
    data["proxy"].pop("epochs", None)
    data["fidelity"] = {"rungs": rungs}
    with pytest.raises(SearchConfigError, match="fidelity.rungs"):
        config_from_dict(data)


def test_the_top_rung_is_the_proxy_budget() -> None:
    data = load_config().to_dict()
    data["proxy"]["epochs"] = 6
    data["fidelity"] = {"rungs": [1, 3, 9], "reduction": 3}
    with pytest.raises(SearchConfigError, match="proxy.epochs 6 differs from the top rung 9"):
        config_from_dict(data)
    data["proxy"].pop("epochs")
    assert config_from_dict(data).train_config("proxy").epochs == 9
    data["fidelity"]["reduction"] = 1
    with pytest.raises(SearchConfigError, match="fidelity.reduction"):
        config_from_dict(data)


# ---- the decision ---------------------------------------------------------------------------
def test_chance_level_is_three_binomial_sigmas() -> None:
    # 10 classes on 900 images: sigma = 0.01, so chance level is up to 0.13
    assert at_chance(0.13, 10, 900) and not at_chance(0.131, 10, 900)
    assert not at_chance(0.0, 10, None)  # the count is unknown: no test


def test_decide_promotes_the_first_third_by_pareto_rank_then_spread() -> None:
    # (accuracy, ACE): a, b, c on the front (c the cheapest); d, e dominated by b
    reached = {"a": (0.9, 100.0), "b": (0.8, 50.0), "c": (0.5, 10.0), "d": (0.7, 60.0)}
    kwargs = {"num_classes": 10, "val_images": 1000}
    # e joins: 5 reached the rung, ceil(5 / 3) = 2 continue; the front's ends a and c come first
    stop = decide(FIDELITY, 3, "e", (0.75, 70.0), reached, **kwargs)
    assert not stop.promote and stop.rank == 4 and stop.of == 5
    assert "place 5 of 5, only the first 2" in stop.reason
    assert decide(FIDELITY, 3, "c", (0.5, 10.0), reached, **kwargs).promote
    # b is inside the front (finite crowding): third, stopped
    assert decide(FIDELITY, 3, "b", (0.8, 50.0), reached, **kwargs).rank == 2
    assert decide(FIDELITY, 3, "x", (0.1, 1.0), {}, **kwargs).promote  # first at the rung


def test_a_rung_passes_on_at_most_one_in_reduction_of_its_entrants() -> None:
    reached = {"a": (0.5, 100.0), "b": (0.4, 100.0), "c": (0.3, 100.0)}
    kwargs = {"num_classes": 10, "val_images": 1000}
    # the best of 4: place 1 of ceil(4 / 3) = 2, but a and b trained on already
    late = decide(FIDELITY, 3, "d", (0.9, 10.0), reached, promoted=2, **kwargs)
    assert not late.promote and late.rank == 0 and "2 of them trained on already" in late.reason
    assert decide(FIDELITY, 3, "d", (0.9, 10.0), reached, promoted=1, **kwargs).promote


def test_does_not_learn_stops_at_the_first_rung_only() -> None:
    kwargs = {"num_classes": 10, "val_images": 1000}
    first = decide(FIDELITY, 1, "x", (0.1, 1.0), {}, **kwargs)
    assert not first.promote and first.reason.startswith("does not learn")
    assert decide(FIDELITY, 3, "x", (0.1, 1.0), {}, **kwargs).promote


# ---- the loop -------------------------------------------------------------------------------
def test_exactly_n_reach_the_top_rung_and_stopped_trials_keep_their_rungs(tmp_path: Path) -> None:
    study = fidelity_study(tmp_path)
    evaluator = FakeEvaluator(top=9)
    report = work(
        study, small_space(), evaluator, 8, fidelity=FIDELITY, checkpoints=tmp_path / "ck"
    )
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] == 8 and states[TrialState.RUNNING] == 0
    assert report.stopped == states[TrialState.PRUNED] > 0
    for trial in study.trials:
        record = TrialRecord.of(trial)
        if record.status == "ok":
            assert [r.epochs for r in record.rungs] == [1, 3, 9]
            assert [r.decision for r in record.rungs] == ["promoted", "promoted", "top"]
            assert trial.values[0] == record.rungs[-1].val_accuracy == record.val_accuracy
        elif record.status == "stopped":
            assert trial.state == TrialState.PRUNED and trial.values is None
            assert record.rungs[-1].decision == "stopped" and record.reason
            assert all(r.decision == "promoted" for r in record.rungs[:-1])
            assert record.rungs[-1].rank >= 0 and record.rungs[-1].of >= 1
    # each architecture's epochs trained once, continuing from its checkpoint
    trained: dict[str, list[tuple[int, int]]] = {}
    for entry in ledger(tmp_path):
        trained.setdefault(entry["archid"], []).append((entry["start"], entry["stop"]))
    for spans in trained.values():
        assert spans == [(a, b) for a, b in zip([0, 1, 3], [1, 3, 9], strict=False)][: len(spans)]
    # a finished architecture's checkpoint is gone, a stopped one's kept
    complete = {t.user_attrs["archid"] for t in study.trials if t.user_attrs["status"] == "ok"}
    kept = {path.stem for path in (tmp_path / "ck" / "pikenas").glob("*.safetensors")}
    assert not kept & complete and kept


def test_results_show_the_rungs(tmp_path: Path) -> None:
    study = fidelity_study(tmp_path)
    work(study, small_space(), FakeEvaluator(top=9), 6, fidelity=FIDELITY)
    frame = trials_frame(study)
    stopped = frame[frame["status"] == "stopped"]
    assert len(stopped) and stopped["accuracy"].isna().all()
    assert stopped["rung_accuracy"].notna().all() and set(stopped["rung_epochs"]) <= {1, 3}
    done = frame[frame["status"] == "ok"]
    assert (done["rung_epochs"] == 9).all() and (done["rung_accuracy"] == done["accuracy"]).all()
    assert all(len(rungs) == 3 for rungs in done["rungs"])


def test_a_dead_candidate_is_stopped_after_the_first_rung(tmp_path: Path) -> None:
    space = few_archs_space(activation_bits=(2, 8))
    study = fidelity_study(tmp_path, sampler="random", space=space)
    evaluator = FakeEvaluator(top=9, dead_when=lambda arch: arch.blocks[0].activation_bits == 2)
    work(study, space, evaluator, 3, fidelity=FIDELITY)
    dead = [t for t in study.trials if t.params["b0_activation_bits"] == 2]
    assert dead
    for trial in dead:
        record = TrialRecord.of(trial)
        assert record.status == "stopped" and record.reason.startswith("does not learn")
        assert [r.epochs for r in record.rungs] == [1]


def test_a_stopped_architecture_proposed_again_is_decided_from_its_stored_rungs(
    tmp_path: Path,
) -> None:
    space = few_archs_space(activation_bits=(2, 8))  # 8 architectures: many proposed again
    study = fidelity_study(tmp_path, sampler="random", space=space)
    evaluator = FakeEvaluator(top=9)
    work(study, space, evaluator, 3, fidelity=FIDELITY, checkpoints=tmp_path / "ck")
    records = [TrialRecord.of(t) for t in study.trials]
    again = [r for r in records if r.status == "stopped" and r.duplicate_of is not None]
    assert again, "no stopped architecture was proposed twice"
    for record in again:
        source = records[record.duplicate_of]
        assert source.archid == record.archid
        assert [r.val_accuracy for r in record.rungs] == [
            r.val_accuracy for r in (source.rungs or ())
        ][: len(record.rungs)]
    rung_epochs = sum(e["stop"] - e["start"] for e in ledger(tmp_path))
    archids = {r.archid for r in records if r.rungs}
    assert rung_epochs <= 9 * len(archids)  # nothing trained twice


def test_two_workers_share_the_rungs_and_end_exactly(tmp_path: Path) -> None:
    from pikenas.search.lock import FileLock

    study = fidelity_study(tmp_path)
    lock_path = tmp_path / "study.log.ask-lock"
    reports = []

    def run(seed: int) -> None:
        storage = buffered(open_storage(tmp_path))
        sampler = make_sampler("nsga2", seed, 4)
        mine = optuna.load_study(study_name="pikenas", storage=storage, sampler=sampler)
        lock = FileLock(lock_path)
        try:
            reports.append(
                work(
                    mine,
                    small_space(),
                    FakeEvaluator(0.002, top=9),
                    10,
                    fidelity=FIDELITY,
                    ask_lock=lock,
                    checkpoints=tmp_path / "ck",
                )
            )
        finally:
            lock.close()

    threads = [threading.Thread(target=run, args=(seed,)) for seed in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    study = optuna.load_study(study_name="pikenas", storage=open_storage(tmp_path))
    states = Counter(t.state for t in study.trials)
    dump = "\n".join(
        f"{t.number} {t.state.name} {TrialRecord.of(t).status} {TrialRecord.of(t).worker} "
        f"{TrialRecord.of(t).duplicate_of} {TrialRecord.of(t).archid} "
        f"{[(x.epochs, x.decision) for x in TrialRecord.of(t).rungs or ()]}"
        for t in study.trials
    )
    assert states[TrialState.COMPLETE] == 10 and states[TrialState.RUNNING] == 0, dump
    assert sum(r.complete for r in reports) == 10
    spans = Counter((e["archid"], e["start"]) for e in ledger(tmp_path))
    assert max(spans.values()) == 1, "an architecture's rung was trained twice"


def test_nsga2_generations_count_stopped_candidates(tmp_path: Path) -> None:
    study = fidelity_study(tmp_path)
    work(study, small_space(), FakeEvaluator(top=9), 8, fidelity=FIDELITY)
    key = "RungAwareNSGAII:generation"
    decided = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    generations = Counter(t.system_attrs[key] for t in decided)
    # every generation but the last holds population_size (4) decided candidates, stopped ones
    # among them: else a generation would wait for 4 candidates to reach the top rung
    assert max(generations) >= 2
    assert all(generations[g] == 4 for g in range(max(generations)))
    stopped = {t.system_attrs[key] for t in decided if t.state == TrialState.PRUNED}
    assert stopped & set(range(max(generations)))


def test_a_candidate_without_ace_v2_is_an_error_never_free() -> None:
    """No ACE v2, no score: deciding or finishing an uncosted candidate raises, and a stored
    record with rung results but no ACE v2 is not ranked."""
    from pikenas.evaluators.candidate import Evaluation, RungResult
    from pikenas.search.halving import RungIndex
    from pikenas.space.errors import EvaluationError

    arch = small_space().decode(small_space().default_params())
    with pytest.raises(EvaluationError, match="no ACE v2"):
        _ = Evaluation(arch=arch).ace_v2
    index = RungIndex(FIDELITY)
    rung = RungResult(epochs=1, val_accuracy=0.5, val_loss=1.0, decision="stopped")
    index.add(0, TrialRecord(archid=arch.archid, rungs=(rung,)), running=False)
    assert index.points(1) == {}
    index.add(1, TrialRecord(archid=arch.archid, rungs=(rung,), ace_v2=3.0), running=False)
    assert index.points(1) == {arch.archid: (0.5, 3.0)}
