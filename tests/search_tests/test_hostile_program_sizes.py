"""Hostile sizes: cost tables whose prices overflow float64 (refused before a search starts,
exit 2) and architectures that validate but ask for absurd work (4096 px, huge channels:
refused where ``ace`` / ``verify`` load them, from the declared shapes, before allocating)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pikenas.evaluators.cost import CostTable
from pikenas.search.cli import main
from pikenas.space.errors import ArchConfigError, CostModelError
from pikenas.space.nn.build import check_arch_size
from pikenas.space.zoo.catalog import get_zoo_arch
from tests.search_tests.conftest import SMALL_CONFIG

_KINDS = ("mac", "mul", "add", "round", "compare", "shift")


def _table(**scales: object) -> dict[str, object]:
    ops = {kind: {"scale": scales.get(kind, 1)} for kind in _KINDS}
    return {"name": "hostile", "unit": "pJ", "ops": ops}


HOSTILE_TABLES = {
    "huge finite float": _table(mac=1e300),
    "huge finite float on a float scale": {
        **_table(),
        "ops": {**_table()["ops"], "mul": {"scale": 1, "float_scale": 1e299}},  # type: ignore[dict-item]
    },
    "huge integer beyond float64": _table(add=10**400),
    "each finite, the sum overflows": _table(**{kind: 3e289 for kind in _KINDS}),
    "NaN": _table(round=float("nan")),
    "infinity": _table(shift=float("inf")),
    "negative": _table(compare=-1),
}


@pytest.mark.parametrize("table", HOSTILE_TABLES.values(), ids=HOSTILE_TABLES.keys())
def test_a_table_whose_prices_overflow_is_refused(table: dict) -> None:
    with pytest.raises(CostModelError) as caught:
        CostTable.from_dict(table)
    assert "\n" not in str(caught.value)


def test_a_large_but_sane_table_is_kept() -> None:
    table = CostTable.from_dict(_table(mac=1e250))
    assert table.prices["mac"].scale == 1e250


def _write(path: Path, table: dict) -> Path:
    path.write_text(json.dumps(table))
    return path


def test_ace_refuses_an_overflowing_table_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = _write(tmp_path / "huge.json", _table(mac=1e300))
    assert main(["ace", "tiny-w4a4", "--cost-table", str(table), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "float64" in err


def test_a_search_refuses_an_overflowing_table_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(SMALL_CONFIG)
    data["cost_table"] = _table(mac=1e300)
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    code = main(["search", str(config), "--out", str(out), "--trials", "4", "--no-export"])
    assert code == 2
    assert not out.exists() or not any(out.iterdir())
    assert capsys.readouterr().err.count("\n") == 1


def _arch_file(tmp_path: Path, **changes: object) -> Path:
    data = json.loads(get_zoo_arch("tiny-w4a4").to_json())
    data.update(changes)
    if "channels" in changes:
        data.pop("channels")
        for block in data["blocks"]:
            block["out_channels"] = changes["channels"]
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "changes",
    [{"resolution": 4096}, {"channels": 4096, "resolution": 256}],
    ids=["4096 px", "huge channels"],
)
@pytest.mark.parametrize("command", ["ace", "verify"])
def test_absurd_architectures_are_refused_where_they_are_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict, command: str
) -> None:
    path = _arch_file(tmp_path, **changes)
    assert path.stat().st_size < 4096  # a 2-4 KB file that validates
    assert main([command, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "too large" in err and "over the bound" in err, err


def test_the_size_check_passes_real_networks_and_refuses_from_the_shapes() -> None:
    for name in ("tiny-w4a4", "pikelpn-3x", "pokebnn-2.0x"):
        check_arch_size(get_zoo_arch(name))
    with pytest.raises(ArchConfigError, match=r"at 4096 px is too large: .* GiB, over the bound"):
        check_arch_size(get_zoo_arch("tiny-w4a4", resolution=4096))


def test_a_bundle_whose_arch_json_asks_for_absurd_work_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``verify BUNDLE`` builds through ``results.export.bundle`` (as ``export`` does): the
    size is checked there, before the network is built."""
    bundle = tmp_path / "trial-1"
    bundle.mkdir()
    _arch_file(tmp_path, resolution=4096).rename(bundle / "arch.json")
    assert main(["verify", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "4096 px is too large" in err, err
