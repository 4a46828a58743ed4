"""PokeBNN's stem and bottleneck (Zhang et al. 2022), as in google/aqt's reference implementation.

Modules (NCHW, float tensors on the fake-quantization grid):

* :class:`PokeStem`: 4x4 stride-4 "valid" conv (8-bit weights, 8-bit pixels) to
  ``group_channels`` -> BN -> DPReLU -> requantize to ``activation_bits`` -> 3x3 grouped conv
  (``group_channels`` groups, 8-bit weights) to ``out_channels`` -> BN -> DPReLU. Output float.
* :class:`PokeConv`: one PokeBNN conv unit. With ``r`` its input and ``r1`` the block input::

      y = BN(conv_binary(sign(r)))                 # 1-bit weights x 1-bit inputs
      y = y + reshape(r)                           # local shortcut: average-shrink / zero-pad
      y = y + tile(r1)                             # block shortcut, third unit only
      y = DPReLU(y) * SE(r)                        # SE computed from the unit's input
      y = BN(y)

  ``reshape``: channels averaged in consecutive groups when ``C_r > C_out``, zero-padded when
  ``C_r < C_out`` (``tile``: repeated), then a 3x3 stride-2 SAME average pool (padding counted)
  when the spatial size differs. ``SE(r) = relu6(conv2(relu(conv1(mean_hw(r)))) + 3) / 6`` with
  ``squeeze_excite_bits`` weights and inputs, ``C_in // 8`` hidden channels and biases.
* :class:`PokeBottleneck`: three units (1x1, 3x3 with the stride, 1x1 to ``4 * channels``).

Every module lowers (``lower``) to the integer program in its cheapest correct form: binary /
4-bit / 8-bit integer convs, and float32 elementwise work with the batch norms fused (BN1 into
one multiply and add; DPReLU's ``bias_x`` into BN1's add; the squeeze-excite scale, BN2's
multiplier, DPReLU's slopes and ``bias_y`` into per-(sample, channel) factors, so a unit costs
per element one multiply and one add for BN1, the shortcut adds, a select, one multiply and one
add). Its element annotations hold the generic kinds (``batchnorm``, ``dprelu``, ``sign``,
``squeeze_excite``, ``residual_add``) and the reference implementation's ``size_stats`` counters
under their names without ``_sops`` (``reshape_add_ch_shrink``, ``se_global_pool_add``, ...),
counted as the reference counts them.
"""

from __future__ import annotations

from torch import Tensor, nn

from pikenas.space.arch import InputSpec, PokeBottleneckSpec, PokeStemSpec
from pikenas.space.errors import ArchConfigError
from pikenas.space.nn._builders import BLOCK_BUILDERS, STEM_BUILDERS
from pikenas.space.nn._codes import OutputCodes, code_range, output_codes, output_step
from pikenas.space.nn._pokebnn_parts import (
    SqueezeExcite,
    batch_norm,
    lower_shortcut,
    reshape_add,
    reshape_channels,
    same_avg_pool,
)
from pikenas.space.nn._requant import lower_float, lower_output
from pikenas.space.nn.activations import DPReLU
from pikenas.space.nn.blocks import InputQuantizer
from pikenas.space.nn.layers import QuantConv2d
from pikenas.space.nn.norms import folded_batch_norm
from pikenas.space.nn.quantizers import make_activation_quantizer
from pikenas.space.program.builder import ProgramBuilder, channel_shape
from pikenas.space.program.ir import Value

__all__ = [
    "PokeStem",
    "PokeConv",
    "PokeBottleneck",
    "SqueezeExcite",
    "reshape_channels",
    "same_avg_pool",
    "build_poke_stem",
    "build_poke_bottleneck",
]

FLOAT_CODES = OutputCodes(32, -1, 1)


# ---- conv unit, bottleneck, stem ---------------------------------------------------------


class PokeConv(nn.Module):
    """One PokeBNN conv unit ``(N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s))``, float in
    and out (see the module docstring). ``block_in_channels``: channels of the block input
    added through the tiled block shortcut (third unit), ``None`` for no block shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        block_in_channels: int | None = None,
        weight_bits: int = 1,
        activation_bits: int = 1,
        squeeze_excite_bits: int = 4,
    ) -> None:
        super().__init__()
        if block_in_channels is not None and block_in_channels < out_channels:
            if out_channels % block_in_channels:
                raise ArchConfigError(
                    f"a PokeBNN block shortcut tiles {block_in_channels} input channels to "
                    f"{out_channels}; 4 * channels must be a multiple of the block's input "
                    "channels (change channels or the stem out_channels)"
                )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.block_in_channels = block_in_channels
        self.input_quantizer = make_activation_quantizer(activation_bits, signed=True)
        family = "binary" if weight_bits == 1 else "uniform"
        self.conv = QuantConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            weight_bits=weight_bits,
            weight_quantizer=family,
            input_bits=activation_bits,
            input_range=code_range(output_codes(self.input_quantizer)),
        )
        self.norm = batch_norm(out_channels, zero_scale=block_in_channels is not None)
        self.activation = DPReLU(out_channels)
        self.squeeze_excite = SqueezeExcite(in_channels, out_channels, squeeze_excite_bits)
        self.norm_out = batch_norm(out_channels)

    def forward(self, x: Tensor, block_input: Tensor | None = None) -> Tensor:
        y = self.norm(self.conv(self.input_quantizer(x)))
        y = reshape_add(x, y, "zeropad")
        if self.block_in_channels is not None:
            if block_input is None:
                raise ValueError("this PokeConv has a block shortcut: pass block_input")
            y = reshape_add(block_input, y, "tile")
        y = self.activation(y) * self.squeeze_excite(x)
        return self.norm_out(y)

    def lower(self, builder: ProgramBuilder, x: Value, block_input: Value | None = None) -> Value:
        have = builder.with_constants
        with builder.layer("input_quantizer"):
            q = lower_output(builder, x, output_codes(self.input_quantizer), scale=1.0, kind="sign")
            builder.note("sign", x.elements)
        acc, _, acc_scale = builder.part("conv", self.conv, q)
        e = acc.elements
        shape = channel_shape(acc.shape)
        builder.note("batchnorm", 2 * e)
        builder.note("dprelu", e)
        builder.note("squeeze_excite", e)
        builder.note("se_mul", e)
        # BN1 fused, with DPReLU's bias_x folded into its add
        m1, b1 = folded_batch_norm(self.norm) if have else (None, None)
        bias_x = self.activation.bias_x.detach().double() if have else None
        t = builder.mul(
            acc,
            builder.constant("M1", acc_scale * m1 if have else None, shape=shape, dtype="float"),
            kind="batchnorm",
        )
        t = builder.add(
            t,
            builder.constant(
                "B1-bias_x", b1 - bias_x if have else None, shape=shape, dtype="float"
            ),
            kind="batchnorm",
        )
        with builder.layer("local_shortcut"):
            local = lower_shortcut(builder, x, acc.shape, "zeropad", "local_shortcut")
            t = builder.add(t, local, kind="residual")
        if self.block_in_channels is not None:
            if block_input is None:
                raise ValueError("this PokeConv has a block shortcut: pass block_input")
            with builder.layer("block_shortcut"):
                block = lower_shortcut(builder, block_input, acc.shape, "tile", "block_shortcut")
                t = builder.add(t, block, kind="residual")
        scales = builder.part("squeeze_excite", self.squeeze_excite, x)  # (C_out, 1, 1)
        # BN2's multiplier, the SE scale, DPReLU's slopes and bias_y: per (sample, channel)
        m2, b2 = folded_batch_norm(self.norm_out) if have else (None, None)
        act = self.activation
        scaled = builder.mul(
            scales,
            builder.constant("M2", m2 if have else None, shape=shape, dtype="float"),
            kind="batchnorm",
        )
        pos = builder.mul(
            scaled,
            builder.constant(
                "slope+", act.pos_slope.detach() if have else None, shape=shape, dtype="float"
            ),
            kind="dprelu",
        )
        neg = builder.mul(
            scaled,
            builder.constant(
                "slope-", act.neg_slope.detach() if have else None, shape=shape, dtype="float"
            ),
            kind="dprelu",
        )
        by = builder.mul(
            scaled,
            builder.constant(
                "-bias_y", -act.bias_y.detach() if have else None, shape=shape, dtype="float"
            ),
            kind="dprelu",
        )
        bias = builder.add(
            by,
            builder.constant("B2", b2 if have else None, shape=shape, dtype="float"),
            kind="batchnorm",
        )
        factor = builder.select(t, pos, neg, kind="dprelu")
        y = builder.mul(t, factor, kind="dprelu")
        return builder.add(y, bias, kind="batchnorm")


class PokeBottleneck(nn.Module):
    """PokeBNN bottleneck ``(N, C_in, H, W) -> (N, 4 * channels, ceil(H/s), ceil(W/s))``:
    1x1 unit to ``channels``, 3x3 unit with the stride, 1x1 unit to ``4 * channels`` with the
    tiled block shortcut. Float in and out."""

    output_codes = FLOAT_CODES

    def __init__(self, spec: PokeBottleneckSpec, in_channels: int) -> None:
        super().__init__()
        self.spec = spec
        options = {
            "weight_bits": spec.weight_bits,
            "activation_bits": spec.activation_bits,
            "squeeze_excite_bits": spec.squeeze_excite_bits,
        }
        self.unit1 = PokeConv(in_channels, spec.channels, 1, **options)
        self.unit2 = PokeConv(spec.channels, spec.channels, 3, stride=spec.stride, **options)
        self.unit3 = PokeConv(
            spec.channels, spec.out_channels, 1, block_in_channels=in_channels, **options
        )

    def forward(self, x: Tensor, step: Tensor | None = None) -> tuple[Tensor, None]:
        y = self.unit2(self.unit1(x))
        return self.unit3(y, block_input=x), None

    def lower(self, builder: ProgramBuilder, x: Value) -> Value:
        y = builder.part("unit1", self.unit1, x)
        y = builder.part("unit2", self.unit2, y)
        return builder.part("unit3", self.unit3, y, x)


class PokeStem(nn.Module):
    """PokeBNN's stem ``(N, C, H, W) -> (N, out_channels, floor((H-4)/4)+1, ...)``, float out.

    Pixels are quantized to ``input_bits``, the intermediate DPReLU output to
    ``activation_bits`` (signed) for the grouped conv.
    """

    output_codes = FLOAT_CODES

    def __init__(
        self, spec: PokeStemSpec, input_channels: int, *, input_spec: InputSpec | None = None
    ) -> None:
        super().__init__()
        self.spec = spec
        self.input_quantizer = InputQuantizer(spec.input_bits, input_spec=input_spec)
        self.conv = QuantConv2d(
            input_channels,
            spec.group_channels,
            4,
            stride=4,
            padding=0,
            weight_bits=spec.weight_bits,
            input_bits=spec.input_bits,
            input_range=code_range(self.input_quantizer.output_codes),
        )
        self.norm = batch_norm(spec.group_channels)
        self.activation = DPReLU(spec.group_channels)
        self.requantizer = make_activation_quantizer(spec.activation_bits, signed=True)
        self.group_conv = QuantConv2d(
            spec.group_channels,
            spec.out_channels,
            3,
            groups=spec.group_channels,
            weight_bits=spec.weight_bits,
            input_bits=spec.activation_bits,
            input_range=code_range(output_codes(self.requantizer)),
        )
        self.group_norm = batch_norm(spec.out_channels)
        self.group_activation = DPReLU(spec.out_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        x, _ = self.input_quantizer(x)
        x = self.activation(self.norm(self.conv(x)))
        x = self.group_conv(self.requantizer(x))
        return self.group_activation(self.group_norm(x)), None

    def lower(self, builder: ProgramBuilder, x: Value) -> Value:
        have = builder.with_constants
        x = builder.part("input_quantizer", self.input_quantizer, x)
        acc, _, acc_scale = builder.part("conv", self.conv, x)
        codes = output_codes(self.requantizer)
        with builder.layer("conv_stage"):
            builder.note("batchnorm", acc.elements)
            builder.note("dprelu", acc.elements)
            builder.note("requantize", acc.elements)
            s_out = output_step(self.requantizer) if have else None
            m, b = folded_batch_norm(self.norm) if have else (None, None)
            y = lower_float(
                builder,
                acc,
                acc_scale * m / s_out if have else None,
                b / s_out if have else None,
                self.activation,
                codes,
                s_out,
                kind="batchnorm",
            )
        acc, _, acc_scale = builder.part("group_conv", self.group_conv, y)
        with builder.layer("group_stage"):
            builder.note("batchnorm", acc.elements)
            builder.note("dprelu", acc.elements)
            m, b = folded_batch_norm(self.group_norm) if have else (None, None)
            return lower_float(
                builder,
                acc,
                acc_scale * m if have else None,
                b if have else None,
                self.group_activation,
                FLOAT_CODES,
                None,
                kind="batchnorm",
            )


@STEM_BUILDERS.register("pokebnn")
def build_poke_stem(
    spec: PokeStemSpec, input_channels: int, *, input_spec: InputSpec | None = None
) -> PokeStem:
    """``STEM_BUILDERS["pokebnn"]``."""
    return PokeStem(spec, input_channels, input_spec=input_spec)


@BLOCK_BUILDERS.register("pokebnn_bottleneck")
def build_poke_bottleneck(spec: PokeBottleneckSpec, in_channels: int) -> PokeBottleneck:
    """``BLOCK_BUILDERS["pokebnn_bottleneck"]``."""
    return PokeBottleneck(spec, in_channels)
