"""PokeBNN's parts: the reference batch norm, shortcut reshaping and pooling, squeeze-excite
(training forward and lowering); the units that use them are in :mod:`space.pokebnn`."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from pikenas.space.nn._codes import code_range, output_codes, output_step
from pikenas.space.nn._requant import lower_output
from pikenas.space.nn.layers import QuantConv2d, lower_weight
from pikenas.space.nn.quantizers import make_activation_quantizer
from pikenas.space.program.builder import ProgramBuilder, channel_shape
from pikenas.space.program.ir import Value

__all__ = [
    "SQUEEZE_EXCITE_REDUCTION",
    "SqueezeExcite",
    "batch_norm",
    "lower_shortcut",
    "reshape_add",
    "reshape_channels",
    "same_avg_pool",
]

SQUEEZE_EXCITE_REDUCTION = 8


def batch_norm(channels: int, *, zero_scale: bool = False) -> nn.BatchNorm2d:
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


def reshape_add(r: Tensor, y: Tensor, method: str) -> Tensor:
    r = reshape_channels(r, y.shape[1], method)
    if r.shape != y.shape:
        r = same_avg_pool(r)
    return y + r


def _scalar(builder: ProgramBuilder, hint: str, value: float) -> object:
    return builder.constant(
        hint, torch.tensor(value) if builder.with_constants else None, shape=(), dtype="float"
    )


def lower_shortcut(
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
