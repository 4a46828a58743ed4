"""The searchable space: fixed-length genes, deterministic repair, encode / decode."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from pikenas.space.arch import ArchConfig, ConvStemSpec, HeadSpec, PikeBlockSpec
from pikenas.space.errors import SearchConfigError
from pikenas.space.searchspace import (
    BLOCK_GENES,
    BlockChoices,
    SearchSpace,
    StageSpace,
    repair_bits,
)
from pikenas.space.zoo.catalog import get_zoo_arch

# tiny-float is left out: its float convs are per-tensor, and granularity is not a gene.
TINY = ("tiny-w8a8", "tiny-w4a4", "tiny-binary", "tiny-pikelpn")


def tiny_space(**choices: object) -> SearchSpace:
    """The skeleton of the zoo's tiny nets (stem 16 ch, 32 / 64 s2 / 64 / 128 s2)."""
    return SearchSpace(
        stages=(
            StageSpace(blocks=1, stride=1, channels=(16, 32, 64)),
            StageSpace(blocks=2, stride=2, channels=(32, 64, 128)),
            StageSpace(blocks=1, stride=2, channels=(64, 128, 256)),
        ),
        choices=BlockChoices(**choices),
    )


def random_genome(space: SearchSpace, rng: random.Random) -> dict[str, object]:
    return {name: rng.choice(choices) for name, choices in space.distributions().items()}


def test_fixed_length_gene_names() -> None:
    space = tiny_space()
    genes = list(space.distributions())
    # 3 stage genes + 4 blocks x 10 block genes, in a fixed order
    assert len(genes) == 3 + 4 * len(BLOCK_GENES) == 43
    assert genes[:3] == ["s0_channels", "s1_channels", "s2_channels"]
    assert genes[3] == "b0_kernel_size" and genes[-1] == "b3_residual"
    assert "b3_pw_bits" in genes


def test_every_random_genome_decodes_to_a_valid_arch() -> None:
    space = tiny_space(activation_bits=(1, 2, 4, 8), dw_bits=(2, 4, 8), pw_bits=(2, 4, 8))
    rng = random.Random(0)
    for _ in range(300):
        arch = space.decode(random_genome(space, rng))
        assert len(arch.blocks) == 4
        # valid: re-validating the JSON gives the same architecture
        assert ArchConfig.from_json(arch.to_json()).archid == arch.archid


def test_repair_rules() -> None:
    assert repair_bits("binary", 8) == 1
    assert repair_bits("ternary", 4) == 2
    assert repair_bits("float", 4) == 32
    assert repair_bits("uniform", 4) == 4
    assert repair_bits("uniform", 1, (1, 2, 4)) == 2  # uniform cannot do 1 bit
    assert repair_bits("pow2", 16, (4, 8, 16)) == 4  # pow2 stops at 5 bits; prefer a choice
    assert repair_bits("pow2", 8) == 5
    space = tiny_space()
    genome = space.default_params() | {
        "b0_dw_quantizer": "binary",
        "b0_dw_bits": 8,
        "b0_pw_quantizer": "ternary",
        "b0_pw_bits": 8,
        "b0_residual": True,  # block 0: 16 -> 16 channels at stride 1: allowed
        "s0_channels": 16,
        "b1_residual": True,  # block 1 has stride 2: repaired to False
        "b2_residual": True,  # block 2: stride 1, same channels (same stage): allowed
        "b3_residual": True,  # stride 2: repaired
    }
    arch = space.decode(genome)
    blocks = arch.blocks
    assert isinstance(blocks[0], PikeBlockSpec)
    assert blocks[0].depthwise.weight_bits == 1 and blocks[0].pointwise.weight_bits == 2
    assert [b.residual for b in blocks] == [True, False, True, False]
    genome["s0_channels"] = 64  # now block 0 changes 16 -> 32 channels: no residual
    assert space.decode(genome).blocks[0].residual is False


@pytest.mark.parametrize("name", TINY)
def test_zoo_tiny_models_encode_to_the_nearest_genome(name: str) -> None:
    space = tiny_space(
        dw_quantizer=("uniform", "pow2", "binary", "ternary", "float"),
        pw_quantizer=("uniform", "pow2", "binary", "ternary", "float"),
        activation_bits=(1, 2, 4, 8, 32),
    )
    arch = get_zoo_arch(name)
    genome = space.encode(arch)
    assert set(genome) == set(space.distributions())
    decoded = space.decode(genome)
    # blocks round-trip exactly (the stem is fixed by the space, so compare blocks only)
    assert decoded.blocks == arch.blocks
    assert space.encode(decoded) == genome


def test_round_trip_is_exact_when_the_stem_matches() -> None:
    space = tiny_space()
    arch = get_zoo_arch("tiny-w8a8")
    assert space.stem == arch.stem
    assert space.encodes_exactly(arch)
    assert space.decode(space.encode(arch)).archid == arch.archid


def test_encode_takes_the_nearest_choice() -> None:
    space = tiny_space(dw_bits=(2, 4), pw_bits=(2, 4), activation_bits=(2, 4))
    arch = get_zoo_arch("tiny-w8a8")  # 8-bit everything: nearest is 4
    genome = space.encode(arch)
    assert genome["b0_dw_bits"] == 4 and genome["b0_activation_bits"] == 4
    assert not space.encodes_exactly(arch)


def test_encode_refuses_another_skeleton() -> None:
    space = SearchSpace(stages=(StageSpace(blocks=2, channels=(16,)),))
    with pytest.raises(SearchConfigError, match=r"PikeLPN blocks in stages of \[2\] blocks"):
        space.encode(get_zoo_arch("tiny-w8a8"))


def test_decode_rejects_missing_unknown_and_out_of_range_genes() -> None:
    space = tiny_space()
    genome = space.default_params()
    with pytest.raises(SearchConfigError, match="b0_norm is missing"):
        space.decode({k: v for k, v in genome.items() if k != "b0_norm"})
    with pytest.raises(SearchConfigError, match="unknown gene"):
        space.decode(genome | {"b9_norm": "batchnorm"})
    with pytest.raises(SearchConfigError, match="b0_dw_bits=3"):
        space.decode(genome | {"b0_dw_bits": 3})


class FakeTrial:
    """Answers suggest_categorical with the last choice and records the calls."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def suggest_categorical(self, name: str, choices: list[object]) -> object:
        self.asked.append(name)
        return choices[-1]


def test_suggest_asks_every_gene_in_order() -> None:
    space = tiny_space()
    trial = FakeTrial()
    arch = space.suggest(trial)
    assert trial.asked == list(space.distributions())
    assert arch.blocks[0].out_channels == 64  # last s0 choice


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([{"blocks": 1, "stride": 3, "channels": [8]}], "stride 3"),
        ([{"blocks": 1, "channels": []}], "at least one choice"),
        ([{"blocks": 1, "channels": [8, 8]}], "twice"),
        ([{"blocks": 0, "channels": [8]}], "needs blocks"),
        ([{"depths": [0, 2], "channels": [8]}], "must lie in 1..16"),
        ([{"blocks": 3, "depths": [1, 2], "channels": [8]}], "largest of depths"),
        (
            [{"blocks": 1, "stride": 2, "channels": [8]}] * 5,  # 8x8 input, 5 stride-2 blocks
            "skeleton does not fit",
        ),
    ],
)
def test_invalid_spaces_are_refused(stages: list[dict[str, object]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SearchSpace.model_validate({"stages": stages})


def test_invalid_choices_are_refused() -> None:
    with pytest.raises(ValidationError, match="dw_bits 9"):
        BlockChoices(dw_bits=(2, 9))
    with pytest.raises(ValidationError, match="activation_bits 0"):
        BlockChoices(activation_bits=(0,))
    with pytest.raises(ValidationError, match="kernel_size 4"):
        BlockChoices(kernel_size=(3, 4))
    with pytest.raises(ValidationError, match="Extra inputs"):
        BlockChoices.model_validate({"bits": [2]})


# ---- no dead candidates ------------------------------------------------------------------------
def test_a_relu_before_a_sign_is_repaired_to_prelu() -> None:
    space = SearchSpace(
        stages=(StageSpace(blocks=2, channels=(8,)),), choices=BlockChoices(activation_bits=(1, 4))
    )
    genome = space.default_params() | {"b0_activation": "relu", "b0_activation_bits": 1}
    arch = space.decode(genome)
    assert arch.blocks[0].activation == "prelu" and arch.blocks[0].activation_bits == 1
    assert arch.dead_ends() == []


def test_a_one_bit_head_after_a_relu_block_is_repaired() -> None:
    space = tiny_space().model_copy(update={"head": HeadSpec(input_bits=1)})
    genome = space.default_params()
    last = space.num_blocks - 1
    genome[f"b{last}_activation"] = "relu"
    arch = space.decode(genome)
    assert arch.blocks[-1].activation == "prelu" and arch.dead_ends() == []


def test_a_dead_stem_is_refused_when_the_space_is_read() -> None:
    with pytest.raises(ValidationError, match="ReLU before a 1-bit output"):
        SearchSpace(
            stem=ConvStemSpec(out_channels=8, stride=1, activation="relu", activation_bits=1),
            stages=(StageSpace(blocks=1, channels=(8,)),),
        )


def test_dead_ends_names_what_makes_a_network_constant() -> None:
    arch = get_zoo_arch("tiny-w8a8")
    dead = arch.replace(
        blocks=(arch.blocks[0].model_copy(update={"activation_bits": 1}), *arch.blocks[1:])
    )
    assert any("blocks.0" in reason for reason in dead.dead_ends())
    assert get_zoo_arch("tiny-binary").dead_ends() == []


@pytest.mark.parametrize("seed", range(40))
def test_random_genomes_decode_to_live_networks(seed: int) -> None:
    space = SearchSpace(
        stages=(
            StageSpace(depths=(1, 2), channels=(8, 16)),
            StageSpace(blocks=2, stride=2, channels=(16,)),
        ),
        choices=BlockChoices(activation_bits=(1, 2, 4)),
        head=HeadSpec(input_bits=1),
    )
    rng = random.Random(seed)
    genome = {name: rng.choice(choices) for name, choices in space.distributions().items()}
    assert space.decode(genome).dead_ends() == []


# ---- searchable depth -----------------------------------------------------------------------
def test_depth_genes_keep_the_encoding_fixed_and_absent_blocks_inactive() -> None:
    space = SearchSpace(
        stages=(
            StageSpace(depths=(1, 2, 3), channels=(8, 16)),
            StageSpace(blocks=1, stride=2, channels=(16,)),
        ),
    )
    genes = space.distributions()
    assert "s0_depth" in genes and "s1_depth" not in genes
    assert sum(name.endswith("_kernel_size") for name in genes) == 4  # 3 + 1 blocks, always
    genome = space.default_params() | {"s0_depth": 1}
    shallow = space.decode(genome)
    assert len(shallow.blocks) == 2
    # changing a gene of an absent block changes nothing
    assert space.decode(genome | {"b2_kernel_size": 5}).archid == shallow.archid
    deep = space.decode(genome | {"s0_depth": 3})
    assert len(deep.blocks) == 4 and deep.blocks[3].stride == 2
    for arch in (shallow, deep):
        assert space.encodes_exactly(arch)
        assert space.decode(space.encode(arch)).archid == arch.archid


def test_a_searched_resolution_is_one_more_gene_and_sets_the_input_size() -> None:
    space = SearchSpace(
        resolution=8, resolutions=(8, 16), stages=(StageSpace(blocks=1, channels=(8,)),)
    )
    genes = space.distributions()
    assert genes["resolution"] == (8, 16) and len(genes) == 1 + 1 + len(BLOCK_GENES)
    params = space.default_params() | {"resolution": 16}
    arch = space.decode(params)
    assert arch.resolution == 16
    assert space.encode(arch)["resolution"] == 16 and space.encodes_exactly(arch)
    fixed = SearchSpace(stages=(StageSpace(blocks=1, channels=(8,)),))
    assert "resolution" not in fixed.distributions()
