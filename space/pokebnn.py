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

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from space._builders import BLOCK_BUILDERS, STEM_BUILDERS
from space._requant import OutputCodes, lower_float, lower_output, output_codes, output_step
from space.activations import DPReLU
from space.arch import PokeBottleneckSpec, PokeStemSpec
from space.blocks import InputQuantizer, code_range
from space.errors import ArchConfigError
from space.layers import QuantConv2d, lower_weight
from space.lowering import ProgramBuilder, channel_shape
from space.norms import folded_batch_norm
from space.program import Value
from space.quantizers import make_activation_quantizer

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

SQUEEZE_EXCITE_REDUCTION = 8
FLOAT_CODES = OutputCodes(32, -1, 1)


def _batch_norm(channels: int, *, zero_scale: bool = False) -> nn.BatchNorm2d:
    """BN with the reference's settings (flax momentum 0.9 = torch 0.1, eps 1e-5)."""
    norm = nn.BatchNorm2d(channels, momentum=0.1, eps=1e-5)
    if zero_scale:  # "ResNet does this. It is important." (third unit of a bottleneck)
        nn.init.zeros_(norm.weight)
    return norm


# ---- shortcut reshaping ------------------------------------------------------------------


def reshape_channels(r: Tensor, out_channels: int, method: str) -> Tensor:
    """Match ``r``'s channels ``(N, C, H, W)`` to ``out_channels``.

    ``C > out``: average consecutive groups of ``C // out`` channels (the first
    ``out * (C // out)`` channels); ``C < out``: ``zeropad`` appends zero channels, ``tile``
    repeats ``r`` ``out // C`` times; equal: ``r``.
    """
    n, channels, height, width = r.shape
    if channels > out_channels:
        group = channels // out_channels
        r = r[:, : out_channels * group].reshape(n, out_channels, group, height, width)
        return r.mean(dim=2)
    if channels < out_channels:
        if method == "tile":
            return r.repeat(1, out_channels // channels, 1, 1)
        return F.pad(r, (0, 0, 0, 0, 0, out_channels - channels))
    return r


def _same_padding(size: int) -> tuple[int, int]:
    total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
    return total // 2, total - total // 2


def same_avg_pool(r: Tensor) -> Tensor:
    """3x3 stride-2 average pool with TF/flax SAME padding, zeros counted (``/ 9``):
    ``(N, C, H, W) -> (N, C, ceil(H / 2), ceil(W / 2))``."""
    top, bottom = _same_padding(r.shape[2])
    left, right = _same_padding(r.shape[3])
    return F.avg_pool2d(F.pad(r, (left, right, top, bottom)), kernel_size=3, stride=2)


def _reshape_add(r: Tensor, y: Tensor, method: str) -> Tensor:
    r = reshape_channels(r, y.shape[1], method)
    if r.shape != y.shape:
        r = same_avg_pool(r)
    return y + r


def _scalar(builder: ProgramBuilder, hint: str, value: float) -> object:
    return builder.constant(
        hint, torch.tensor(value) if builder.with_constants else None, shape=(), dtype="float"
    )


def _lower_shortcut(
    builder: ProgramBuilder, r: Value, out_shape: tuple[int, ...], method: str, kind: str
) -> Value:
    """``reshape(r)`` in float: the channel-group mean, tiling (zero padding is an add on the
    first channels only), then the 3x3 stride-2 SAME average pool when the size changes."""
    channels, height, width = r.shape
    out_channels, out_h, out_w = out_shape
    n_out = math.prod(out_shape)
    if channels > out_channels:
        group = channels // out_channels
        builder.note("reshape_add_ch_shrink", out_channels * group * height * width)
        builder.note("reshape_add_ch_shrink_mul", out_channels * height * width)
        r = builder.sum(r, mode="groups", kind=kind, out_channels=out_channels, group=group)
        if group > 1:
            r = builder.mul(r, _scalar(builder, "1/group", 1.0 / group), kind=kind)
    elif channels < out_channels and method == "tile":
        repeats = out_channels // channels
        r = builder.reshape("tile", r, (out_channels, height, width), repeats=repeats)
    if (height, width) != (out_h, out_w):
        builder.note("reshape_add_avg_pool", 9 * n_out)
        padding = (*_same_padding(height), *_same_padding(width))
        r = builder.sum(r, mode="window", kind=kind, kernel=3, stride=2, padding=list(padding))
        r = builder.mul(r, _scalar(builder, "1/9", 1.0 / 9.0), kind=kind)
    name = (
        "reshape_add_local_residual" if kind == "local_shortcut" else "reshape_add_block_residual"
    )
    builder.note(name, n_out)
    builder.note("residual_add", r.elements)
    return r


# ---- squeeze-excite ----------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    """PokeBNN's squeeze-excite: ``(N, C_in, H, W) -> (N, C_out, 1, 1)`` scales in ``[0, 1]``.

    ``s = mean_hw(x)`` -> signed ``bits`` quantize -> 1x1 conv (``bits`` weights, bias) to
    ``max(1, C_in // 8)`` -> ReLU -> unsigned ``bits`` quantize -> 1x1 conv (bias) to ``C_out``
    -> ``min(max(s + 3, 0), 6) / 6``.
    """

    def __init__(self, in_channels: int, out_channels: int, bits: int = 4) -> None:
        super().__init__()
        self.hidden_channels = max(1, in_channels // SQUEEZE_EXCITE_REDUCTION)
        self.in_channels, self.out_channels, self.bits = in_channels, out_channels, bits
        self.quantize_in = make_activation_quantizer(bits, signed=True)
        self.reduce = QuantConv2d(
            in_channels,
            self.hidden_channels,
            1,
            weight_bits=bits,
            input_bits=bits,
            input_range=code_range(output_codes(self.quantize_in)),
            bias=True,
        )
        self.quantize_hidden = make_activation_quantizer(bits, signed=False)
        self.expand = QuantConv2d(
            self.hidden_channels,
            out_channels,
            1,
            weight_bits=bits,
            input_bits=bits,
            input_range=code_range(output_codes(self.quantize_hidden)),
            bias=True,
        )

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = torch.relu(self.reduce(self.quantize_in(s)))
        s = self.expand(self.quantize_hidden(s))
        return torch.clamp(s + 3.0, 0.0, 6.0) / 6.0

    def lower(self, builder: ProgramBuilder, x: Value) -> Value:
        """Pool sum, quantize (the 1 / HW folded into the quantization multiply), conv, the
        dequantize + bias + ReLU + requantize of the hidden layer fused (multiply, add, clip,
        round), conv, and ``relu6(s + 3) / 6`` fused (multiply, add, clip to [0, 1])."""
        have = builder.with_constants
        channels, height, width = x.shape
        builder.note("se_global_pool_add", channels * height * width)
        builder.note("se_global_pool_mul", channels)
        total = builder.sum(x, mode="global", kind="squeeze_excite")
        step_in = output_step(self.quantize_in) if have else None
        factor = 1.0 / (height * width) / float(step_in) if have else 0.0
        t = builder.mul(total, _scalar(builder, "1/(HW step)", factor), kind="squeeze_excite")
        codes_in = output_codes(self.quantize_in)
        q = lower_output(
            builder, t, codes_in, scale=float(step_in) if have else None, kind="squeeze_excite"
        )
        builder.note("requantize", channels)
        hidden = _fused_conv(
            builder,
            "reduce",
            self.reduce,
            q,
            output_step(self.quantize_hidden) if have else None,
            0.0,
        )
        builder.note("se_relu", hidden.elements)
        codes_hidden = output_codes(self.quantize_hidden)
        step_hidden = float(output_step(self.quantize_hidden)) if have else None
        clipped = builder.clip(hidden, 0.0, float(codes_hidden.hi), kind="squeeze_excite")
        q = builder.round(clipped, 0, codes_hidden.hi, kind="squeeze_excite", scale=step_hidden)
        builder.note("requantize", hidden.elements)
        scales = _fused_conv(
            builder, "expand", self.expand, q, torch.tensor(6.0, dtype=torch.float64), 3.0
        )
        builder.note("se_relu6", scales.elements)
        return builder.clip(scales, 0.0, 1.0, kind="squeeze_excite")


def _fused_conv(
    builder: ProgramBuilder,
    name: str,
    conv: QuantConv2d,
    q: Value,
    divisor: Tensor | None,
    offset: float,
) -> Value:
    """``(float32(acc) * s_w s_x + bias + offset) / divisor`` as one multiply and one add."""
    have = builder.with_constants
    with builder.layer(name):
        weight, weight_scale = lower_weight(
            builder, conv.weight_quantizer, conv.weight, is_float=False
        )
        acc = builder.conv(q, weight, stride=1, padding=(0, 0, 0, 0), groups=1)
        shape = channel_shape(acc.shape)
        factor = weight_scale.double() * q.scale / divisor if have else None
        m = builder.constant("M", factor, shape=shape, dtype="float")
        b = builder.constant(
            "B",
            (conv.bias.detach().double() + offset) / divisor if have else None,
            shape=shape,
            dtype="float",
        )
        return builder.add(builder.mul(acc, m, kind="squeeze_excite"), b, kind="squeeze_excite")


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
        self.norm = _batch_norm(out_channels, zero_scale=block_in_channels is not None)
        self.activation = DPReLU(out_channels)
        self.squeeze_excite = SqueezeExcite(in_channels, out_channels, squeeze_excite_bits)
        self.norm_out = _batch_norm(out_channels)

    def forward(self, x: Tensor, block_input: Tensor | None = None) -> Tensor:
        y = self.norm(self.conv(self.input_quantizer(x)))
        y = _reshape_add(x, y, "zeropad")
        if self.block_in_channels is not None:
            if block_input is None:
                raise ValueError("this PokeConv has a block shortcut: pass block_input")
            y = _reshape_add(block_input, y, "tile")
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
            local = _lower_shortcut(builder, x, acc.shape, "zeropad", "local_shortcut")
            t = builder.add(t, local, kind="residual")
        if self.block_in_channels is not None:
            if block_input is None:
                raise ValueError("this PokeConv has a block shortcut: pass block_input")
            with builder.layer("block_shortcut"):
                block = _lower_shortcut(builder, block_input, acc.shape, "tile", "block_shortcut")
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

    def __init__(self, spec: PokeStemSpec, input_channels: int) -> None:
        super().__init__()
        self.spec = spec
        self.input_quantizer = InputQuantizer(spec.input_bits)
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
        self.norm = _batch_norm(spec.group_channels)
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
        self.group_norm = _batch_norm(spec.out_channels)
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
def build_poke_stem(spec: PokeStemSpec, input_channels: int) -> PokeStem:
    """``STEM_BUILDERS["pokebnn"]``."""
    return PokeStem(spec, input_channels)


@BLOCK_BUILDERS.register("pokebnn_bottleneck")
def build_poke_bottleneck(spec: PokeBottleneckSpec, in_channels: int) -> PokeBottleneck:
    """``BLOCK_BUILDERS["pokebnn_bottleneck"]``."""
    return PokeBottleneck(spec, in_channels)
