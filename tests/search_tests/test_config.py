"""Search configs: the embedded default, the examples, and every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pikenas.evaluators.training.config import TrainConfig
from pikenas.search.config import default_config_text, load_config
from pikenas.space.errors import SearchConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: object, name: str = "search.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def default_dict() -> dict:
    return yaml.safe_load(default_config_text())


def test_embedded_default_equals_the_example_file() -> None:
    assert default_config_text() == (ROOT / "configs" / "digits_default.yaml").read_text()
    config = load_config()
    assert config.dataset.name == "digits"
    assert config.search.sampler == "nsga2"
    assert len(config.space.distributions()) == 3 + 4 * 10


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(colour="red"), r"colour: unknown key"),
        (lambda d: d.update(cost_table="nope.yaml"), r"cost_table: 'nope.yaml' is neither"),
        (lambda d: d["space"].update(stagez=[]), r"space\.stagez: unknown key"),
        (lambda d: d["space"]["choices"].update(dw_bits=[2, 9]), r"space\.choices\.dw_bits"),
        (lambda d: d["search"].update(sampler="cmaes"), r"search\.sampler: unknown sampler"),
        (lambda d: d["search"].update(trials=0), r"search\.trials: .*greater than or equal"),
        (lambda d: d.update(max_ace=-1), r"max_ace: .*greater than 0"),
        (lambda d: d["proxy"].update(epochs=0), r"proxy\..*epochs"),
        (lambda d: d["full"].update(epoch=3), r"full\..*epoch"),
        (lambda d: d["proxy"].update(threads=4), r"proxy: .*threads cannot be set here"),
        (lambda d: d.update(baselines=["tiny-w9a9"]), r"baselines\.0: unknown zoo model"),
        (
            lambda d: d.update(baselines=["mobilenet_v1-0.25-w8a8"]),
            # 224 px MobileNet strides at 8x8: the zoo cannot build it at the space's geometry
            r"baselines\.0: invalid architecture: blocks\.5\.stride=2 would stride a 1x1",
        ),
        (lambda d: d["space"].pop("stages"), r"space\.stages: required key is missing"),
    ],
)
def test_bad_configs_name_the_file_and_the_key(tmp_path: Path, change, expected: str) -> None:
    data = default_dict()
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(SearchConfigError, match=expected) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    assert "\n" not in message


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "dataset:\n  name: [digits\nspace: {}\n")
    with pytest.raises(SearchConfigError, match=r"not valid YAML at line \d+"):
        load_config(path)


def test_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(SearchConfigError, match="must hold a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SearchConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_name_the_option() -> None:
    config = load_config()
    assert config.with_overrides(trials=7, sampler="random").search.trials == 7
    assert config.with_overrides(trials=None).search.trials == config.search.trials
    with pytest.raises(SearchConfigError, match=r"^--population-size: "):
        config.with_overrides(population_size=1)
    with pytest.raises(SearchConfigError, match=r"^--sampler: unknown sampler 'x'"):
        config.with_overrides(sampler="x")


def test_train_config_carries_dataset_and_threads() -> None:
    config = load_config()
    budget = config.train_config("proxy", threads=3)
    assert budget.dataset == "digits" and budget.threads == 3
    assert budget.epochs == config.proxy.epochs == config.fidelity.top == 9
    assert isinstance(config.proxy, TrainConfig) and isinstance(config.full, TrainConfig)
    assert "threads" not in config.to_dict()["proxy"]  # the search sets it per worker


def test_evaluator_setup_is_typed_parts() -> None:
    config = load_config()
    setup = config.evaluator_setup(threads=2)
    assert setup.rungs == config.fidelity.rungs and setup.proxy.epochs == setup.rungs[-1]
    assert setup.proxy.threads == setup.full.threads == 2
    assert setup.dataset.name == setup.proxy.dataset == "digits"
    moved = config.with_dataset(config.dataset.model_copy(update={"data_dir": "/data"}))
    assert moved.train_config("full").data_dir == moved.proxy.data_dir == "/data"
