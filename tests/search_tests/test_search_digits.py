"""One real (tiny) search on digits: real ACE counting, real proxy training (1 epoch), through
the same run request `pikenas search` builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from pikenas.results.record import StudyRecord, TrialRecord
from pikenas.search.config import config_from_dict, default_config_text
from pikenas.search.pipeline import run_search
from pikenas.search.spec import RunRequest, WorkerSpec
from pikenas.space.arch import ArchConfig

#: the record fields every really trained trial has
TRAINED = (
    "arch", "archid", "ace_v1", "ace_v2", "macs", "params", "elementwise_share", "val_accuracy",
    "test_accuracy", "val_loss", "proxy_wall_s", "images_per_s", "status", "worker",
)  # fmt: skip


@pytest.mark.slow
def test_tiny_real_search_on_digits(tmp_path: Path) -> None:
    from pikenas.evaluators.cost import count_ace

    data = yaml.safe_load(default_config_text())
    data.pop("fidelity", None)  # a fixed budget of 1 epoch
    data["proxy"].update(epochs=1, data_fraction=0.3)
    data["full"].update(epochs=1, data_fraction=0.3)
    data["baselines"] = ["tiny-w4a4"]
    data["search"].update(trials=3, population_size=2, full_train_top=1)
    config = config_from_dict(data)
    out = tmp_path / "run"
    spec = WorkerSpec(config=config, storage=str(out / "study.log"), n_trials=3, seed=0)
    result = run_search(RunRequest(worker=spec, out=out, workers=2), export=False)

    study = result.study
    assert [d.name.lower() for d in study.directions] == ["maximize", "minimize"]
    record = StudyRecord.of(study)
    assert record.dataset == "digits" and record.cost_table == "ace_v2" and record.search_config
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3
    assert complete[0].user_attrs.get("baseline") == "tiny-w4a4"
    for trial in complete:
        trial_record = TrialRecord.of(trial)
        if trial_record.status == "ok":
            assert all(getattr(trial_record, name) is not None for name in TRAINED)
        arch = ArchConfig.from_json(trial_record.arch)
        report = count_ace(arch)
        assert trial_record.ace_v2 == trial.values[1] == pytest.approx(report.ace_v2)
        assert trial_record.ace_v1 == report.ace_v1
        assert 0.0 <= trial.values[0] <= 1.0
    ((number, final),) = record.final_results.items()
    assert final.final_dir == f"final/trial-{number}"  # relative to the run folder
    assert (out / final.final_dir / "weights.safetensors").is_file()
    assert 0.0 <= final.final_accuracy <= 1.0
    assert TrialRecord.of(study.trials[number]).status == "ok"


@pytest.mark.slow
def test_tiny_real_search_with_successive_halving(tmp_path: Path) -> None:
    """Rungs of 1 and 2 epochs: the top-rung trials end at the accuracy of 2 epochs in one go,
    the stopped ones keep their first rung, the checkpoints lie in the run folder."""
    from pikenas.evaluators.training.loop import evaluate

    data = yaml.safe_load(default_config_text())
    data["proxy"].pop("epochs", None)
    data["proxy"].update(data_fraction=0.3)
    data["fidelity"] = {"rungs": [1, 2], "reduction": 2}
    data["baselines"] = []
    data["search"].update(trials=2, population_size=2, full_train_top=0, sampler="random")
    config = config_from_dict(data)
    out = tmp_path / "run"
    spec = WorkerSpec(
        config=config, storage=str(out / "study.log"), n_trials=2, seed=0,
        checkpoints=str(out / "checkpoints"),
    )  # fmt: skip
    study = run_search(RunRequest(worker=spec, out=out, workers=2), export=False).study
    records = {t.number: TrialRecord.of(t) for t in study.trials}
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    trial = next(t for t in complete if records[t.number].status == "ok")
    record = records[trial.number]
    assert [rung.epochs for rung in record.rungs] == [1, 2]
    budget = config.train_config("proxy", threads=1)
    alone = evaluate(ArchConfig.from_json(record.arch), budget)
    assert trial.values[0] == alone.val_accuracy  # resumed from the rung-1 checkpoint, exactly
    for other in records.values():
        if other.status == "stopped" and other.rungs:
            assert [rung.epochs for rung in other.rungs] == [1]
            assert (out / "checkpoints" / "pikenas" / f"{other.archid}.safetensors").is_file()


def test_a_searched_resolution_is_trained_and_costed_at_that_size() -> None:
    from pikenas.evaluators.candidate import ProxyEvaluator

    data = yaml.safe_load(default_config_text())
    data["space"]["resolutions"] = [8, 12]
    data.pop("fidelity", None)
    data["proxy"].update(epochs=1, data_fraction=0.1)
    config = config_from_dict(data)
    evaluator = ProxyEvaluator(config.evaluator_setup())
    genome = config.space.default_params()
    small = evaluator.fit(config.space.decode(genome | {"resolution": 8}))
    large = evaluator.fit(config.space.decode(genome | {"resolution": 12}))
    assert (small.resolution, large.resolution) == (8, 12)
    assert evaluator.cost(large).macs > evaluator.cost(small).macs
    assert 0.0 <= evaluator.proxy(large).val_accuracy <= 1.0  # the data were resized to 12x12
