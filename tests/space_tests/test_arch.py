"""ArchConfig: JSON round trip, stable name-independent archid, one-line errors naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pikenas.space.arch import ArchConfig, ConvQuantSpec, ConvStemSpec, PikeBlockSpec
from pikenas.space.errors import ArchConfigError


def _block(**changes: Any) -> dict[str, Any]:
    block = {
        "kind": "pikelpn",
        "out_channels": 8,
        "stride": 1,
        "depthwise": {"weight_bits": 4, "weight_quantizer": "pow2"},
        "pointwise": {"weight_bits": 4},
        "activation_bits": 4,
        "norm": "quantnorm",
        "scale_format": "pow2",
    }
    block.update(changes)
    return block


def _arch_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "example",
        "input_channels": 1,
        "resolution": 8,
        "num_classes": 10,
        "stem": {"kind": "conv", "out_channels": 8, "stride": 2},
        "blocks": [_block(), _block(out_channels=16, stride=2)],
    }
    data.update(changes)
    return data


def _arch(**changes: Any) -> ArchConfig:
    return ArchConfig.from_dict(_arch_dict(**changes))


def test_json_round_trip_is_exact() -> None:
    arch = _arch()
    text = arch.to_json()
    again = ArchConfig.from_json(text)
    assert again == arch
    assert again.to_json() == text
    assert json.loads(text)["blocks"][0]["depthwise"]["weight_quantizer"] == "pow2"


def test_archid_is_stable_and_ignores_the_name() -> None:
    arch = _arch()
    assert len(arch.archid) == 16 and int(arch.archid, 16) >= 0
    assert _arch().archid == arch.archid
    assert _arch(name="another name").archid == arch.archid
    assert ArchConfig.from_json(arch.to_json(indent=None)).archid == arch.archid
    assert _arch(num_classes=11).archid != arch.archid
    changed = _arch(blocks=[_block(), _block(out_channels=16, stride=2, activation_bits=3)])
    assert changed.archid != arch.archid


def test_defaults_are_filled_in() -> None:
    arch = _arch()
    assert arch.head.input_bits == 8
    assert isinstance(arch.stem, ConvStemSpec)
    assert isinstance(arch.blocks[0], PikeBlockSpec)
    assert arch.blocks[0].pointwise == ConvQuantSpec(weight_bits=4)
    assert arch.feature_sizes() == [(8, 4), (8, 4), (16, 2)]


INVALID = [
    ("unknown top-level key", _arch_dict(colour="blue"), "colour", "unknown key"),
    (
        "unknown block key",
        _arch_dict(blocks=[_block(expand_ratio=6)]),
        "blocks.0.pikelpn.expand_ratio",
        "unknown key",
    ),
    (
        "activation bits outside the set",
        _arch_dict(blocks=[_block(activation_bits=9)]),
        "activation_bits=9",
        "use one of",
    ),
    (
        "stem input bits outside the set",
        _arch_dict(stem={"kind": "conv", "out_channels": 8, "input_bits": 0}),
        "input_bits=0",
        "use one of",
    ),
    (
        "non-positive channels",
        _arch_dict(blocks=[_block(out_channels=0)]),
        "out_channels",
        "greater than 0",
    ),
    (
        "non-positive stem channels",
        _arch_dict(stem={"kind": "conv", "out_channels": -3}),
        "stem.conv.out_channels",
        "greater than 0",
    ),
    (
        "stride on a 1x1 map",
        _arch_dict(resolution=4, blocks=[_block(stride=2), _block(stride=2)]),
        "blocks.1.stride",
        "1x1",
    ),
    (
        "family that cannot take the bits",
        _arch_dict(blocks=[_block(pointwise={"weight_bits": 3, "weight_quantizer": "binary"})]),
        "weight_bits=3",
        "binary",
    ),
    (
        "pow2 at 16 bits",
        _arch_dict(blocks=[_block(depthwise={"weight_bits": 16, "weight_quantizer": "pow2"})]),
        "weight_bits=16",
        "pow2",
    ),
    (
        "residual with stride 2",
        _arch_dict(blocks=[_block(out_channels=8, stride=2, residual=True)]),
        "blocks.0.residual",
        "stride 1",
    ),
    (
        "residual with a channel change",
        _arch_dict(blocks=[_block(out_channels=16, residual=True)]),
        "blocks.0.residual",
        "out_channels",
    ),
    (
        "unknown quantizer family",
        _arch_dict(blocks=[_block(depthwise={"weight_bits": 4, "weight_quantizer": "log"})]),
        "weight_quantizer",
        "",
    ),
    (
        "unknown scale format",
        _arch_dict(blocks=[_block(scale_format="int3")]),
        "scale_format",
        "",
    ),
    ("no blocks", _arch_dict(blocks=[]), "blocks", ""),
]


@pytest.mark.parametrize(
    ("data", "field", "fix"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
def test_invalid_configuration_raises_one_line(data: dict[str, Any], field: str, fix: str) -> None:
    with pytest.raises(ArchConfigError) as caught:
        ArchConfig.from_dict(data)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("invalid architecture: ")
    assert "architecture: architecture" not in message
    assert field in message
    assert fix in message
    with pytest.raises(ArchConfigError):
        ArchConfig.from_json(json.dumps(data))


def test_malformed_json_is_an_arch_config_error() -> None:
    with pytest.raises(ArchConfigError):
        ArchConfig.from_json("{not json")


def test_config_is_frozen() -> None:
    arch = _arch()
    with pytest.raises(Exception, match="frozen"):
        arch.resolution = 32  # type: ignore[misc]
    assert arch.replace(resolution=32).resolution == 32
    with pytest.raises(ArchConfigError, match="resolution"):
        arch.replace(resolution=0)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("resolution",), True, "is a boolean"),
        (("resolution",), "8", "is text; write the number unquoted"),
        (("resolution",), 8.0, "not a whole number"),
        (("resolution",), 10**6, "less than or equal to 4096"),
        (("num_classes",), 10**9, "less than or equal"),
        (("blocks", 0, "out_channels"), 10**9, "less than or equal to 16384"),
        (("blocks", 0, "out_channels"), 10**40, "less than or equal to 16384"),
        (("blocks", 0, "out_channels"), "32", "is text"),
        (("blocks", 0, "residual"), 1, "not a boolean"),
        (("blocks", 0, "stride"), True, "is a boolean"),
        (("blocks", 0, "activation_bits"), 4.0, "not a whole number"),
    ],
)
def test_numbers_are_numbers_and_sizes_are_bounded(path, value, message) -> None:  # noqa: ANN001
    """A hostile or mistyped arch.json is one line before anything is built: no conversion of
    booleans or strings, no 10^9 channels."""
    from pikenas.space.zoo.catalog import get_zoo_arch

    data = get_zoo_arch("tiny-w8a8").model_dump(mode="json")
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ArchConfigError, match=message):
        ArchConfig.from_json(json.dumps(data))


def test_total_size_is_bounded_before_building() -> None:
    from pikenas.space.zoo.catalog import get_zoo_arch

    data = get_zoo_arch("tiny-w8a8").model_dump(mode="json")
    wide = {**data["blocks"][0], "out_channels": 16_000, "stride": 1, "residual": False}
    data["blocks"] = [wide] * 200
    with pytest.raises(ArchConfigError, match="weights, more than pikenas builds"):
        ArchConfig.from_json(json.dumps(data))
