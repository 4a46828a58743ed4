"""One real (tiny) search on digits: real ACE counting, real proxy training (1 epoch)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from search.backends import RunRequest
from search.config import config_from_dict, default_config_text
from search.finalize import FINAL_RESULTS_ATTR
from search.pipeline import run_search
from space.arch import ArchConfig

STUDY_ATTRS = {"pikenas_version", "dataset", "search_config", "cost_table"}
TRIAL_ATTRS = {
    "arch", "archid", "ace_v1", "ace_v2", "macs", "params", "elementwise_share", "val_accuracy",
    "test_accuracy", "val_loss", "proxy_wall_s", "images_per_s", "status", "worker",
}  # fmt: skip


@pytest.mark.slow
def test_tiny_real_search_on_digits(tmp_path: Path) -> None:
    from evaluators.ace import count_ace

    data = yaml.safe_load(default_config_text())
    data["proxy"].update(epochs=1, data_fraction=0.3)
    data["full"].update(epochs=1, data_fraction=0.3)
    data["baselines"] = ["tiny-w4a4"]
    data["search"].update(trials=3, population_size=2, full_train_top=1)
    config = config_from_dict(data)
    out = tmp_path / "run"
    result = run_search(RunRequest(config=config, out=out, workers=2), export=False)

    study = optuna.load_study(study_name="pikenas", storage=result.study._storage)
    assert [d.name.lower() for d in study.directions] == ["maximize", "minimize"]
    assert set(study.user_attrs) >= STUDY_ATTRS
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    assert complete[0].user_attrs.get("baseline") == "tiny-w4a4"
    for trial in complete:
        assert set(trial.user_attrs) >= TRIAL_ATTRS
        arch = ArchConfig.from_json(trial.user_attrs["arch"])
        report = count_ace(arch)
        assert trial.user_attrs["ace_v2"] == trial.values[1] == pytest.approx(report.ace_v2)
        assert trial.user_attrs["ace_v1"] == report.ace_v1
        assert 0.0 <= trial.values[0] <= 1.0
    ((number, final),) = study.user_attrs[FINAL_RESULTS_ATTR].items()
    assert (Path(final["final_dir"]) / "weights.safetensors").is_file()
    assert 0.0 <= final["final_accuracy"] <= 1.0
