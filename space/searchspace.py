"""The searchable space: a fixed skeleton of PikeLPN blocks with per-block choices.

Encoding (what a sampler sees): a FIXED-LENGTH list of categorical genes. Every stage has one
``s<i>_channels`` gene and every block ``b<j>`` (numbered over the whole network from 0) has
all of :data:`BLOCK_GENES`, whatever the other genes say, so NSGA-II's crossover and mutation
always act on meaningful genes and never fall back to random sampling because a parameter
appeared or vanished. Combinations that an :class:`~space.arch.ArchConfig` cannot take are
repaired deterministically in :meth:`SearchSpace.decode` (:func:`repair_bits`):

* the quantizer family fixes the bits: ``binary`` -> 1, ``ternary`` -> 2, ``float`` -> 32;
* ``uniform`` / ``pow2`` with bits that family cannot take -> the nearest bits it can take
  (preferring the gene's own choices; ties go to the lower width, the cheaper one);
* ``residual`` only where the block keeps the feature map: stride 1 and as many output as input
  channels; elsewhere it is turned off.

No dead candidates: a configuration whose output cannot depend on its input is repaired too
(:meth:`space.arch.ArchConfig.dead_ends` names what would make it dead):

* a ReLU before a 1-bit (sign) requantizer makes every output ``sign(max(x, 0)) = +1``: such a
  block's activation becomes ``prelu``;
* a 1-bit head input after an unsigned (ReLU) last block is the sign of a non-negative mean,
  always ``+1``: the last block's activation becomes ``prelu``;
* a stem with ReLU and 1-bit output is refused when the space is read (it is not searched).

Searchable depth: a stage with ``depths: [1, 2, 3]`` has a ``s<i>_depth`` gene and genes for its
largest depth (``blocks``, default the largest of ``depths``); the genes of absent blocks are
inactive (decoding ignores them), so the encoding keeps its length and NSGA-II's operators stay
meaningful. Searchable input resolution: ``resolutions: [16, 24, 32]`` adds a ``resolution`` gene
(the decoded architecture takes that input size; the evaluator resizes the data set to it, and
ACE v2 counts it), for data sets whose images shrink or grow meaningfully (CIFAR, image folders).
The stem and the head (8-bit by default) are fixed. The space imports no optimizer:
:meth:`SearchSpace.suggest` takes any object with an Optuna-style
``suggest_categorical(name, choices)`` method.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from pydantic import Field, field_validator, model_validator

from pikenas.space._strict import StrictModel
from pikenas.space.arch import (
    ACTIVATION_BITS,
    QUANTIZER_BITS,
    ActivationKind,
    ArchConfig,
    ConvQuantSpec,
    ConvStemSpec,
    Granularity,
    HeadSpec,
    NormKind,
    PikeBlockSpec,
    QuantizerFamily,
    ScaleFormat,
)
from pikenas.space.errors import ArchConfigError, SearchConfigError

__all__ = [
    "BLOCK_GENES",
    "BlockChoices",
    "StageSpace",
    "SearchSpace",
    "SuggestsCategorical",
    "repair_bits",
]

logger = logging.getLogger(__name__)

#: per-block gene names, in encoding order (the full name is ``b<j>_<gene>``).
BLOCK_GENES: tuple[str, ...] = (
    "kernel_size",
    "dw_quantizer",
    "dw_bits",
    "pw_quantizer",
    "pw_bits",
    "activation_bits",
    "activation",
    "norm",
    "scale_format",
    "residual",
)

_WEIGHT_BITS: tuple[int, ...] = tuple(sorted({b for bits in QUANTIZER_BITS.values() for b in bits}))

Choice = bool | int | str


class SuggestsCategorical(Protocol):
    """What :meth:`SearchSpace.suggest` needs of a trial (an ``optuna.trial.Trial`` fits)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


_Strict = StrictModel


def _nonempty_unique(values: tuple[Any, ...], field: str) -> tuple[Any, ...]:
    if not values:
        raise ValueError(f"{field} needs at least one choice")
    if len(set(values)) != len(values):
        raise ValueError(f"{field} lists a choice twice: {list(values)}; list each once")
    return values


class BlockChoices(_Strict):
    """The choices every searchable block offers (one categorical gene per field).

    Bits are in bits; ``dw_*`` is the depthwise k x k conv, ``pw_*`` the pointwise 1 x 1 conv
    (their separate families are DHQ); ``scale_format`` is the Double Quantization format of the
    block's scales and folded QuantNorm multipliers.
    """

    kernel_size: tuple[int, ...] = (3, 5)
    dw_quantizer: tuple[QuantizerFamily, ...] = ("uniform", "pow2", "binary", "ternary")
    dw_bits: tuple[int, ...] = (2, 4, 8)
    pw_quantizer: tuple[QuantizerFamily, ...] = ("uniform", "pow2", "binary", "ternary")
    pw_bits: tuple[int, ...] = (2, 4, 8)
    activation_bits: tuple[int, ...] = (2, 4, 8)
    activation: tuple[ActivationKind, ...] = ("relu", "prelu", "dprelu")
    norm: tuple[NormKind, ...] = ("batchnorm", "quantnorm")
    scale_format: tuple[ScaleFormat, ...] = ("float32", "int8", "pow2")
    residual: tuple[bool, ...] = (False, True)
    dw_granularity: Granularity = "per_channel"
    pw_granularity: Granularity = "per_channel"

    @field_validator(*BLOCK_GENES)
    @classmethod
    def _choices(cls, values: tuple[Any, ...], info: Any) -> tuple[Any, ...]:
        return _nonempty_unique(values, info.field_name)

    @field_validator("kernel_size")
    @classmethod
    def _kernels(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        for value in values:
            if value not in (1, 3, 5, 7):
                raise ValueError(f"kernel_size {value} is not supported; use 1, 3, 5 or 7")
        return values

    @field_validator("dw_bits", "pw_bits")
    @classmethod
    def _weight_bits(cls, values: tuple[int, ...], info: Any) -> tuple[int, ...]:
        for value in values:
            if value not in _WEIGHT_BITS:
                raise ValueError(
                    f"{info.field_name} {value} is not a weight width any quantizer takes; "
                    f"use values from {list(_WEIGHT_BITS)}"
                )
        return values

    @field_validator("activation_bits")
    @classmethod
    def _activation_bits(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        for value in values:
            if value not in ACTIVATION_BITS:
                raise ValueError(
                    f"activation_bits {value} is not supported; use values from "
                    f"{list(ACTIVATION_BITS)} (1 = binary, 32 = float)"
                )
        return values


class StageSpace(_Strict):
    """One stage of the skeleton: ``blocks`` blocks (or a searched depth among ``depths``, at
    most ``blocks``), the first with ``stride``, all with the same searched output ``channels``
    (one gene per stage)."""

    blocks: int = Field(default=0, ge=0, le=16)
    depths: tuple[int, ...] = ()
    stride: int = 1
    channels: tuple[int, ...]

    @model_validator(mode="after")
    def _depths(self) -> StageSpace:
        if not self.depths and self.blocks < 1:
            raise ValueError("a stage needs blocks (its depth) or depths (the choices)")
        if self.depths:
            _nonempty_unique(self.depths, "depths")
            largest = max(self.depths)
            if min(self.depths) < 1 or largest > 16:
                raise ValueError(f"depths {list(self.depths)} must lie in 1..16")
            if self.blocks and self.blocks != largest:
                raise ValueError(
                    f"blocks={self.blocks} must be the largest of depths {list(self.depths)} "
                    "(or leave blocks out)"
                )
            object.__setattr__(self, "blocks", largest)
        return self

    @property
    def searched_depth(self) -> bool:
        return len(self.depths) > 1

    @field_validator("stride")
    @classmethod
    def _stride(cls, value: int) -> int:
        if value not in (1, 2):
            raise ValueError(f"stride {value} is not supported; use 1 or 2")
        return value

    @field_validator("channels")
    @classmethod
    def _channels(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        for value in values:
            if value < 1:
                raise ValueError(f"channels {value} must be a positive integer")
        return _nonempty_unique(values, "channels")


def repair_bits(family: str, bits: int, choices: tuple[int, ...] = ()) -> int:
    """The weight width a ``family`` quantizer gets for the gene value ``bits``.

    Fixed-width families ignore ``bits`` (binary 1, ternary 2, float 32). For ``uniform`` /
    ``pow2``, ``bits`` is kept when the family can take it; otherwise the nearest width the
    family can take, preferring widths among ``choices``; ties go to the lower (cheaper) width.
    """
    allowed = QUANTIZER_BITS[family]
    if bits in allowed:
        return bits
    preferred = [b for b in allowed if b in choices] or list(allowed)
    return min(preferred, key=lambda b: (abs(b - bits), b))


def _nearest(value: Any, choices: tuple[Any, ...]) -> Any:
    """``value`` when it is a choice; else the nearest numeric choice (ties: lower) or the
    first choice for non-numeric genes."""
    if value in choices:
        return value
    numeric = [c for c in choices if isinstance(c, int) and not isinstance(c, bool)]
    if isinstance(value, int) and not isinstance(value, bool) and numeric:
        return min(numeric, key=lambda c: (abs(c - value), c))
    return choices[0]


class SearchSpace(_Strict):
    """The searchable space: input geometry, a fixed stem / head and the stage skeleton, plus
    the per-block :class:`BlockChoices`.

    ``input_channels`` / ``resolution`` (pixels) / ``num_classes`` describe the data the
    decoded architectures take; the search fits them to the data set before costing.
    """

    input_channels: int = Field(default=1, gt=0)
    resolution: int = Field(default=8, gt=0)
    resolutions: tuple[int, ...] = ()
    num_classes: int = Field(default=10, gt=1)
    stem: ConvStemSpec = ConvStemSpec(out_channels=16, kernel_size=3, stride=1)
    stages: tuple[StageSpace, ...] = Field(min_length=1)
    choices: BlockChoices = BlockChoices()
    head: HeadSpec = HeadSpec()

    @field_validator("resolutions")
    @classmethod
    def _resolutions(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if values and min(values) < 1:
            raise ValueError(f"resolutions {list(values)} must be positive pixel counts")
        return _nonempty_unique(values, "resolutions") if values else values

    @property
    def searched_resolution(self) -> bool:
        """Whether the input resolution is a gene (``resolutions`` has several choices)."""
        return len(self.resolutions) > 1

    @model_validator(mode="after")
    def _skeleton_fits(self) -> SearchSpace:
        if self.stem.activation == "relu" and self.stem.activation_bits == 1:
            raise ValueError(
                "stem: a ReLU before a 1-bit output makes every output +1 (a dead network); "
                "use activation prelu or more activation_bits"
            )
        # Decoding the first choice of every gene validates the geometry (strides vs resolution);
        # the deepest stages give the smallest feature maps.
        try:
            smallest = {"resolution": min(self.resolutions)} if self.searched_resolution else {}
            self.decode(self.default_params() | self._deepest() | smallest)
        except ArchConfigError as exc:
            raise ValueError(f"the stage skeleton does not fit: {exc}") from None
        return self

    def _deepest(self) -> dict[str, Choice]:
        return {
            f"s{index}_depth": max(stage.depths)
            for index, stage in enumerate(self.stages)
            if stage.searched_depth
        }

    # ---- the encoding ----------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return sum(stage.blocks for stage in self.stages)

    def distributions(self) -> dict[str, tuple[Choice, ...]]:
        """Every gene name -> its choices, in encoding order (the same keys for every
        candidate). ``search.samplers`` turns these into Optuna categorical distributions."""
        genes: dict[str, tuple[Choice, ...]] = {}
        if self.searched_resolution:
            genes["resolution"] = self.resolutions
        for index, stage in enumerate(self.stages):
            genes[f"s{index}_channels"] = stage.channels
            if stage.searched_depth:
                genes[f"s{index}_depth"] = stage.depths
        for block in range(self.num_blocks):
            for gene in BLOCK_GENES:
                genes[f"b{block}_{gene}"] = getattr(self.choices, gene)
        return genes

    def default_params(self) -> dict[str, Choice]:
        """The genome of the first choice of every gene."""
        return {name: choices[0] for name, choices in self.distributions().items()}

    def suggest(self, trial: SuggestsCategorical) -> ArchConfig:
        """Ask ``trial`` for every gene (in encoding order) and decode the answer."""
        params = {
            name: trial.suggest_categorical(name, list(choices))
            for name, choices in self.distributions().items()
        }
        return self.decode(params)

    def decode(self, params: Mapping[str, Any], name: str = "searched") -> ArchConfig:
        """The architecture of a genome, with the repair rules of the module docstring applied.

        Every gene must be present with one of its choices; anything else raises
        :class:`SearchConfigError` naming the gene.
        """
        genes = self.distributions()
        unknown = sorted(set(params) - set(genes))
        if unknown:
            raise SearchConfigError(
                f"unknown gene(s) {', '.join(unknown)}; this space has {len(genes)} genes "
                f"(s<i>_channels and b<j>_<{'|'.join(BLOCK_GENES)}>)"
            )
        for gene, choices in genes.items():
            if gene not in params:
                raise SearchConfigError(f"gene {gene} is missing; give one of {list(choices)}")
            if params[gene] not in choices:
                raise SearchConfigError(
                    f"gene {gene}={params[gene]!r} is not one of its choices {list(choices)}"
                )
        blocks: list[PikeBlockSpec] = []
        in_channels = self.stem.out_channels
        index = 0
        for stage_index, stage in enumerate(self.stages):
            out_channels = int(params[f"s{stage_index}_channels"])
            depth = int(params.get(f"s{stage_index}_depth", stage.blocks))
            for position in range(stage.blocks):
                if position < depth:  # the genes of absent blocks are inactive
                    stride = stage.stride if position == 0 else 1
                    blocks.append(
                        self._decode_block(params, index, in_channels, out_channels, stride)
                    )
                    in_channels = out_channels
                index += 1
        if self.head.input_bits == 1 and blocks[-1].activation == "relu":
            blocks[-1] = blocks[-1].model_copy(update={"activation": "prelu"})
        return ArchConfig.from_dict(
            {
                "name": name,
                "input_channels": self.input_channels,
                "resolution": int(params.get("resolution", self.resolution)),
                "num_classes": self.num_classes,
                "stem": self.stem,
                "blocks": tuple(blocks),
                "head": self.head,
            }
        )

    def _decode_block(
        self,
        params: Mapping[str, Any],
        index: int,
        in_channels: int,
        out_channels: int,
        stride: int,
    ) -> PikeBlockSpec:
        def gene(name: str) -> Any:
            return params[f"b{index}_{name}"]

        choices = self.choices
        dw_family = gene("dw_quantizer")
        pw_family = gene("pw_quantizer")
        keeps_shape = stride == 1 and in_channels == out_channels
        activation = gene("activation")
        if activation == "relu" and int(gene("activation_bits")) == 1:
            activation = "prelu"  # sign(max(x, 0)) is always +1
        return PikeBlockSpec(
            out_channels=out_channels,
            stride=stride,
            kernel_size=int(gene("kernel_size")),
            residual=bool(gene("residual")) and keeps_shape,
            depthwise=ConvQuantSpec(
                weight_bits=repair_bits(dw_family, int(gene("dw_bits")), choices.dw_bits),
                weight_quantizer=dw_family,
                weight_granularity=choices.dw_granularity,
            ),
            pointwise=ConvQuantSpec(
                weight_bits=repair_bits(pw_family, int(gene("pw_bits")), choices.pw_bits),
                weight_quantizer=pw_family,
                weight_granularity=choices.pw_granularity,
            ),
            activation_bits=int(gene("activation_bits")),
            activation=activation,
            norm=gene("norm"),
            scale_format=gene("scale_format"),
        )

    def encode(self, arch: ArchConfig) -> dict[str, Choice]:
        """The genome nearest to ``arch`` (used to enqueue zoo baselines as fixed points).

        ``arch`` must be a network of PikeLPN blocks with as many blocks as the skeleton. Each
        gene takes the arch's value when it is a choice, else the nearest numeric choice (or
        the first choice for a family / kind the space does not offer). Stage channels come from
        the stage's first block. Fixed-width families encode their bits gene as the nearest
        choice, which decoding ignores. See :meth:`encodes_exactly` for lossless-ness.
        """
        blocks = arch.blocks
        depths = self._depths_of(arch)
        if depths is None or not all(isinstance(block, PikeBlockSpec) for block in blocks):
            kinds = sorted({block.kind for block in blocks})
            raise SearchConfigError(
                f"architecture {arch.name or arch.archid!r} has {len(blocks)} block(s) of kind "
                f"{', '.join(kinds)}; this space needs PikeLPN blocks in stages of "
                f"{[list(s.depths) or s.blocks for s in self.stages]} blocks; choose a baseline "
                "with the space's skeleton or change space.stages"
            )
        genes = self.distributions()
        params: dict[str, Choice] = {}
        if self.searched_resolution:
            params["resolution"] = _nearest(arch.resolution, self.resolutions)
        start = 0
        index = 0
        for stage_index, (stage, depth) in enumerate(zip(self.stages, depths, strict=True)):
            name = f"s{stage_index}_channels"
            params[name] = _nearest(blocks[start].out_channels, genes[name])
            if stage.searched_depth:
                params[f"s{stage_index}_depth"] = depth
            for position in range(stage.blocks):
                # an absent block repeats the stage's last present one (inactive genes)
                block = blocks[start + min(position, depth - 1)]
                assert isinstance(block, PikeBlockSpec)
                values: dict[str, Any] = {
                    "kernel_size": block.kernel_size,
                    "dw_quantizer": block.depthwise.weight_quantizer,
                    "dw_bits": block.depthwise.weight_bits,
                    "pw_quantizer": block.pointwise.weight_quantizer,
                    "pw_bits": block.pointwise.weight_bits,
                    "activation_bits": block.activation_bits,
                    "activation": block.activation,
                    "norm": block.norm,
                    "scale_format": block.scale_format,
                    "residual": block.residual,
                }
                for gene, value in values.items():
                    gene_name = f"b{index}_{gene}"
                    params[gene_name] = _nearest(value, genes[gene_name])
                index += 1
            start += depth
        return params

    def _depths_of(self, arch: ArchConfig) -> tuple[int, ...] | None:
        """The stage depths that split ``arch``'s blocks into this skeleton's stages (the first
        combination whose strides match), or None."""
        import itertools

        options = [stage.depths or (stage.blocks,) for stage in self.stages]
        for depths in itertools.product(*options):
            if sum(depths) != len(arch.blocks):
                continue
            start, fits = 0, True
            for stage, depth in zip(self.stages, depths, strict=True):
                strides = [block.stride for block in arch.blocks[start : start + depth]]
                fits = fits and strides == [stage.stride] + [1] * (depth - 1)
                start += depth
            if fits:
                return depths
        return None

    def encodes_exactly(self, arch: ArchConfig) -> bool:
        """Whether ``decode(encode(arch))`` is ``arch`` (same archid, with the space's input
        geometry): the arch lies in the space."""
        try:
            decoded = self.decode(self.encode(arch))
        except SearchConfigError:
            return False
        fitted = arch.replace(
            input_channels=self.input_channels,
            resolution=decoded.resolution if self.searched_resolution else self.resolution,
            num_classes=self.num_classes,
        )
        return decoded.archid == fitted.archid
