"""`pikenas zoo` through typer's in-process runner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pikenas.search.cli import app
from pikenas.space.arch import ArchConfig
from pikenas.space.zoo.catalog import get_zoo_arch, zoo_names

runner = CliRunner()


def test_list_shows_every_name_with_its_description() -> None:
    result = runner.invoke(app, ["zoo"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == zoo_names()
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)


def test_list_as_json() -> None:
    result = runner.invoke(app, ["zoo", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    assert [item["name"] for item in listing] == zoo_names()
    assert all(item["description"] for item in listing)


@pytest.mark.parametrize("name", zoo_names())
def test_json_is_exactly_the_arch_config(name: str) -> None:
    result = runner.invoke(app, ["zoo", name, "--json"])
    assert result.exit_code == 0, result.output
    assert result.output == get_zoo_arch(name).to_json() + "\n"
    assert ArchConfig.from_json(result.output) == get_zoo_arch(name)


def test_resolution_option_changes_the_input_size() -> None:
    result = runner.invoke(app, ["zoo", "mobilenet_v1-0.25-w8a8", "--json", "--resolution", "96"])
    assert result.exit_code == 0, result.output
    arch = ArchConfig.from_json(result.output)
    assert arch.resolution == 96
    assert arch == get_zoo_arch("mobilenet_v1-0.25-w8a8", resolution=96)


def test_tiny_adapts_to_cifar_shape() -> None:
    args = ["zoo", "tiny-w4a4", "--json", "--resolution", "32", "--input-channels", "3"]
    result = runner.invoke(app, [*args, "--num-classes", "100"])
    assert result.exit_code == 0, result.output
    arch = ArchConfig.from_json(result.output)
    assert (arch.input_channels, arch.resolution, arch.num_classes) == (3, 32, 100)


def test_show_one_model_summarises_it() -> None:
    result = runner.invoke(app, ["zoo", "pokebnn-1.0x"])
    assert result.exit_code == 0, result.output
    assert "2048x7x7" in result.output and "google/aqt" in result.output


def test_unknown_name_exits_2_with_one_line_listing_valid_names() -> None:
    result = runner.invoke(app, ["zoo", "mobilenet_v3"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert "mobilenet_v3" in lines[0] and "pokebnn-1.0x" in lines[0]


def test_resolution_too_small_exits_2_with_one_line() -> None:
    result = runner.invoke(app, ["zoo", "mobilenet_v1-1.0-float", "--resolution", "16"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "resolution" in lines[0]
