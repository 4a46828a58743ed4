"""`pikenas ace`: JSON shape, the same numbers for a zoo name and its JSON file, bad input -> 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pikenas.search.cli import app, main

torch.set_num_threads(1)

runner = CliRunner()
NAME = "tiny-pikelpn"


def invoke(*args: str):
    return runner.invoke(app, ["ace", *args])


def test_json_has_the_report_keys() -> None:
    result = invoke(NAME, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for key in (
        "ace_v1",
        "ace_v2",
        "macs",
        "params",
        "elementwise_share",
        "elementwise_elements",
        "breakdown",
    ):
        assert key in data
    assert data["name"] == NAME
    assert data["ace_v2"] == sum(row["cost"] for row in data["breakdown"])
    assert {"layer", "op", "count", "bits_a", "bits_b", "cost"} <= set(data["breakdown"][0])
    assert isinstance(data["ace_v1"], int) and data["ace_v1"] > 0


def test_table_shows_every_layer_and_the_totals_of_the_json() -> None:
    result = invoke(NAME)
    assert result.exit_code == 0, result.output
    data = json.loads(invoke(NAME, "--json").stdout)
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line}
    for layer in data["layers"]:  # one row per layer: params, MACs, ACE v1, MAC and elementwise
        cells = rows[layer["layer"]]
        numbers = [int(cell.replace(",", "")) for cell in cells[2:7]]
        keys = ("params", "macs", "ace_v1", "mac_cost", "elementwise_cost")
        assert numbers == [layer[key] for key in keys], layer["layer"]
    total = [int(cell.replace(",", "")) for cell in rows["Total"][1:6]]
    assert total == [
        data[key] for key in ("params", "macs", "ace_v1", "mac_cost", "elementwise_cost")
    ]
    assert f"ACE v2 (bit-ops): {data['ace_v2']:,}" in result.stdout


def test_zoo_name_and_its_json_file_agree(tmp_path: Path) -> None:
    zoo = runner.invoke(app, ["zoo", "mobilenet_v1-0.25-w4a4", "--json"])
    assert zoo.exit_code == 0, zoo.output
    path = tmp_path / "arch.json"
    path.write_text(zoo.stdout)
    by_name = json.loads(invoke("mobilenet_v1-0.25-w4a4", "--resolution", "96", "--json").stdout)
    by_file = json.loads(invoke(str(path), "--resolution", "96", "--json").stdout)
    assert by_file["input_shape"] == [1, 3, 96, 96]
    for key in ("ace_v1", "ace_v2", "macs", "params", "elementwise_elements", "breakdown"):
        assert by_name[key] == by_file[key], key


def test_cost_table_option(tmp_path: Path) -> None:
    fp32 = json.loads(invoke(NAME, "--json").stdout)
    table = tmp_path / "double.yaml"
    table.write_text(
        "name: double\nops:\n"
        + "".join(f"  {kind}: {{scale: 2}}\n" for kind in ("mac", "mul", "add"))
        + "".join(f"  {kind}: {{scale: 2}}\n" for kind in ("round", "compare", "shift"))
    )
    doubled = json.loads(invoke(NAME, "--cost-table", str(table), "--json").stdout)
    assert doubled["ace_v2"] == 2 * fp32["ace_v2"]
    assert doubled["cost_table"] == "double"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-model"], "no-such-model"),
        (["missing/arch.json"], "no such file"),
        ([NAME, "--cost-table", "absent.yaml"], "absent.yaml"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "invalid architecture"),
        ('{"stem": {"kind": "conv", "out_channels": 8}, "blocks": []}', "blocks"),
        ("[1, 2]", "invalid architecture"),
    ],
)
def test_malformed_arch_json_exits_2(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    result = invoke(str(path))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert str(path) in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_console_entry_point_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ace", "no-such-model"]) == 2
    assert "unknown zoo model" in capsys.readouterr().err
