"""The search honours the cost table: ``cost_table:`` in the YAML, ``--cost-table`` and
``search`` / ``worker``; the study records it, names its cost objective by
it, refuses a worker with another one; and another table changes the front."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pikenas.evaluators.cost import CostTable, count_ace
from pikenas.results.front import front_table
from pikenas.results.record import StudyRecord
from pikenas.results.storage import open_study
from pikenas.results.trials import study_cost_table, trial_arch, trials_frame
from pikenas.search.cli import main
from pikenas.search.config import load_config
from pikenas.space.errors import SearchConfigError
from tests.search_tests.conftest import SMALL_CONFIG
from tests.search_tests.fakes import FAKE_TRAINING

ROOT = Path(__file__).resolve().parents[2]
ENERGY = ROOT / "configs" / "cost_tables" / "energy_45nm_illustrative.yaml"
#: MACs 1000x dearer than elementwise operations: the bit-widths dominate the cost
MAC_HEAVY = {
    "name": "mac-heavy",
    "ops": {"mac": {"scale": 1000}, **{kind: {"scale": 1} for kind in
            ("mul", "add", "round", "compare", "shift")}},
}  # fmt: skip
SPACE_YAML = SMALL_CONFIG.replace("search: {population_size: 4}", "search: {sampler: random}")


def _config(tmp_path: Path, cost_table: object = None) -> Path:
    data = yaml.safe_load(SPACE_YAML)
    if cost_table is not None:
        data["cost_table"] = cost_table
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cost_table_in_the_yaml_is_a_name_a_file_or_a_mapping(tmp_path: Path) -> None:
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "energy.yaml").write_text(ENERGY.read_text())
    by_file = load_config(_config(tmp_path, "tables/energy.yaml"))  # relative to the YAML
    assert by_file.cost_table_object() == CostTable.load(ENERGY)
    assert by_file.cost_table_object().unit == "pJ"
    assert load_config(_config(tmp_path, "ace_v2")).cost_table is None  # the default, as null
    inline = load_config(_config(tmp_path, MAC_HEAVY)).cost_table_object()
    assert inline.name == "mac-heavy" and inline.prices["mac"].scale == 1000


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("absent.yaml", r"cost_table: 'absent.yaml' is neither a built-in table"),
        ({"name": "x", "ops": {"mac": {"scale": 1}}}, r"cost_table: .*ops\.mul is missing"),
        ({"ops": {}, "colour": 1}, r"cost_table: .*unknown key 'colour'"),
    ],
)
def test_bad_cost_tables_name_the_file_and_the_key(tmp_path: Path, table, message) -> None:
    path = _config(tmp_path, table)
    with pytest.raises(SearchConfigError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def _search(tmp_path: Path, name: str, *options: str) -> Path:
    out = tmp_path / name
    argv = ["search", str(_config(tmp_path)), "--out", str(out), "--trials", "16", "--seed", "5"]
    argv += ["--workers", "1", "--evaluator", FAKE_TRAINING, "--full-train-top", "0"]
    assert main([*argv, "--no-export", *options]) == 0
    return out


def test_a_search_is_scored_and_recorded_with_its_cost_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "heavy.yaml"
    table.write_text(yaml.safe_dump(MAC_HEAVY))
    default = open_study(_search(tmp_path, "default"))
    heavy = open_study(_search(tmp_path, "heavy", "--cost-table", str(table)))
    record = StudyRecord.of(heavy)
    assert (record.cost_table, record.cost_unit) == ("mac-heavy", "bit-ops")
    assert heavy.metric_names == ["accuracy", "mac-heavy (bit-ops)"]
    assert default.metric_names == ["accuracy", "ace_v2 (bit-ops)"]
    assert study_cost_table(heavy) == CostTable.from_dict(MAC_HEAVY)
    for trial in heavy.trials:  # every value is the ACE v2 of that table
        arch = trial_arch(trial.user_attrs)
        assert trial.values[1] == count_ace(arch, cost_table=study_cost_table(heavy)).ace_v2
    # the same candidates (same seed), another table: another front
    same = [t.params for t in default.trials] == [t.params for t in heavy.trials]
    assert same
    fronts = [set(front_table(trials_frame(s))["archid"]) for s in (default, heavy)]
    assert fronts[0] != fronts[1]
    capsys.readouterr()
    assert main(["front", str(tmp_path / "heavy")]) == 0
    assert "mac-heavy [bit-ops]" in capsys.readouterr().out.splitlines()[0]  # the cost column


def test_a_worker_with_another_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    energy = open_study(_search(tmp_path, "energy", "--cost-table", str(ENERGY)))
    assert StudyRecord.of(energy).cost_table == "energy-45nm-illustrative"
    capsys.readouterr()
    worker = ["worker", str(_config(tmp_path)), "--storage", str(tmp_path / "energy" / "study.log")]
    worker += ["--trials", "17", "--evaluator", FAKE_TRAINING]
    assert main(worker) == 2  # the default table: refused
    assert "scored with cost table 'energy-45nm-illustrative', this search uses 'ace_v2'" in (
        capsys.readouterr().err
    )
    assert main([*worker, "--cost-table", str(ENERGY)]) == 0
    assert "holds 17 COMPLETE trials" in capsys.readouterr().out
