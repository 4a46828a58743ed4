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

Every module declares its inference arithmetic (``inference_ops``, docs/ace_v2_rules.md): binary /
4-bit / 8-bit MACs, and the float elementwise work (BN, DPReLU, shortcuts, pooling, SE scaling) at
32
bits. ``elements`` holds the generic kinds (``batchnorm``, ``dprelu``, ``sign``,
``requantize``, ``squeeze_excite``, ``residual_add``) and the reference implementation's
``size_stats`` counters under their names without ``_sops`` (``reshape_add_ch_shrink``,
``reshape_add_avg_pool``, ``se_global_pool_add``, ...), counted as the reference counts them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from space._builders import BLOCK_BUILDERS, STEM_BUILDERS
from space.activations import DPReLU
from space.arch import PokeBottleneckSpec, PokeStemSpec
from space.blocks import InputQuantizer
from space.costs import FLOAT_BITS, CostDeclaration, Op
from space.errors import ArchConfigError
from space.layers import QuantConv2d
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

Shape = tuple[int, ...]
_F = FLOAT_BITS
SQUEEZE_EXCITE_REDUCTION = 8


def _fop(op: str, count: int, label: str) -> Op:
    """A float (32-bit) elementwise op."""
    return Op(op, count, _F, _F, True, label)  # type: ignore[arg-type]


def _bn_ops(elements: int, *, dequantize: bool) -> list[Op]:
    """Float batch norm at inference: [dequantize], scale multiply, shift add."""
    ops = [_fop("mul", elements, "dequantize")] if dequantize else []
    return ops + [_fop("mul", elements, "bn_scale"), _fop("add", elements, "bn_shift")]


def _quantize_ops(elements: int) -> list[Op]:
    """Float -> b-bit integer (b > 1): scale multiply, round, clip to both bounds."""
    return [
        _fop("mul", elements, "quantize"),
        _fop("round", elements, "round"),
        _fop("compare", 2 * elements, "clip"),
    ]


def _merge(*declarations: CostDeclaration) -> CostDeclaration:
    total = CostDeclaration()
    for declaration in declarations:
        total = total + declaration
    return total


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


def same_avg_pool(r: Tensor) -> Tensor:
    """3x3 stride-2 average pool with TF/flax SAME padding, zeros counted (``/ 9``):
    ``(N, C, H, W) -> (N, C, ceil(H / 2), ceil(W / 2))``."""
    pads = []
    for size in (r.shape[3], r.shape[2]):  # F.pad order: last dim first
        total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
        pads += [total // 2, total - total // 2]
    return F.avg_pool2d(F.pad(r, pads), kernel_size=3, stride=2)


def _shortcut_declaration(
    r_shape: Shape, out_shape: Shape, method: str, kind: str
) -> CostDeclaration:
    """Ops and reference counters of ``y + reshape(r)`` (``kind``: ``local`` / ``block``)."""
    n, channels, height, width = r_shape
    out_channels, out_h, out_w = out_shape[1:]
    out_elements = math.prod(out_shape)
    ops: list[Op] = []
    elements: dict[str, int] = {}
    if channels > out_channels:
        group = channels // out_channels
        shrunk = n * out_channels * height * width
        elements["reshape_add_ch_shrink"] = shrunk * group
        elements["reshape_add_ch_shrink_mul"] = shrunk
        if group > 1:  # group == 1 is a plain channel slice
            ops += [_fop("add", shrunk * group, "shrink_sum"), _fop("mul", shrunk, "shrink_scale")]
        channels = out_channels
    elif channels < out_channels and method == "tile":
        channels = out_channels
    if (height, width) != (out_h, out_w):
        pooled = n * channels * out_h * out_w
        # the reference counts the pool on the full (padded / tiled) output
        elements["reshape_add_avg_pool"] = 9 * out_elements
        ops += [_fop("add", 9 * pooled, "pool_sum"), _fop("mul", pooled, "pool_scale")]
    # zero-padded channels need no add on hardware; the reference counter counts them anyway
    ops.append(_fop("add", n * channels * out_h * out_w, f"{kind}_residual"))
    name = "reshape_add_local_residual" if kind == "local" else "reshape_add_block_residual"
    elements[name] = out_elements
    elements["residual_add"] = n * channels * out_h * out_w
    return CostDeclaration(tuple(ops), elements, 0)


def _reshape_add(r: Tensor, y: Tensor, method: str) -> Tensor:
    r = reshape_channels(r, y.shape[1], method)
    if r.shape != y.shape:
        r = same_avg_pool(r)
    return y + r


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
            in_channels, self.hidden_channels, 1, weight_bits=bits, input_bits=bits, bias=True
        )
        self.quantize_hidden = make_activation_quantizer(bits, signed=False)
        self.expand = QuantConv2d(
            self.hidden_channels, out_channels, 1, weight_bits=bits, input_bits=bits, bias=True
        )

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        s = torch.relu(self.reduce(self.quantize_in(s)))
        s = self.expand(self.quantize_hidden(s))
        return torch.clamp(s + 3.0, 0.0, 6.0) / 6.0

    def inference_ops(self, input_shape: Shape, output_shape: Shape) -> CostDeclaration:
        """Pool (``add`` per input element, ``mul`` per channel), quantize, two integer 1x1
        convs each followed by a float dequantize multiply and bias add, ReLU, quantize,
        shifted ReLU6 (``add``, two ``compare``, ``mul``); all elementwise ops float 32."""
        n, channels = input_shape[0], input_shape[1]
        pooled = n * channels
        hidden_shape = (n, self.hidden_channels, 1, 1)
        hidden, scales = math.prod(hidden_shape), n * self.out_channels
        reduce = self.reduce.inference_ops((n, channels, 1, 1), hidden_shape)
        expand = self.expand.inference_ops(hidden_shape, (n, self.out_channels, 1, 1))
        ops = [
            _fop("add", math.prod(input_shape), "se_pool_sum"),
            _fop("mul", pooled, "se_pool_scale"),
        ]
        ops += _quantize_ops(pooled)
        ops += list(reduce.ops) + [_fop("mul", hidden, "dequantize")]
        # QuantConv2d declares its bias add after the MACs; dequantize comes between them
        ops += [_fop("compare", hidden, "se_relu")] + _quantize_ops(hidden)
        ops += list(expand.ops) + [_fop("mul", scales, "dequantize")]
        ops += [
            _fop("add", scales, "relu6_shift"),
            _fop("compare", 2 * scales, "relu6_clip"),
            _fop("mul", scales, "relu6_scale"),
        ]
        elements = {
            "se_global_pool_add": math.prod(input_shape),
            "se_global_pool_mul": pooled,
            "se_relu": hidden,
            "se_relu6": scales,
            "requantize": pooled + hidden,
        }
        return CostDeclaration(tuple(ops), elements, reduce.params + expand.params)


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

    def inference_ops(
        self,
        input_shape: Shape,
        output_shape: Shape,
        block_input_shape: Shape | None = None,
    ) -> CostDeclaration:
        """Everything one call executes; ``block_input_shape`` (default: ``input_shape``)
        is the shape of the block input for the block shortcut."""
        e = math.prod(output_shape)
        n = input_shape[0]
        binarize = self.input_quantizer.bits == 1
        sign = (
            CostDeclaration(
                (_fop("compare", math.prod(input_shape), "sign"),),
                {"sign": math.prod(input_shape)},
                0,
            )
            if binarize
            else CostDeclaration(
                tuple(_quantize_ops(math.prod(input_shape))),
                {"requantize": math.prod(input_shape)},
                0,
            )
        )
        parts = [
            sign,
            self.conv.inference_ops(input_shape, output_shape),
            CostDeclaration(
                tuple(_bn_ops(e, dequantize=True)), {"batchnorm": e}, 2 * self.out_channels
            ),
            _shortcut_declaration(input_shape, output_shape, "zeropad", "local"),
        ]
        if self.block_in_channels is not None:
            block_shape = block_input_shape or input_shape
            parts.append(_shortcut_declaration(block_shape, output_shape, "tile", "block"))
        parts += [
            self.activation.inference_ops(output_shape, output_shape),
            self.squeeze_excite.inference_ops(input_shape, (n, self.out_channels, 1, 1)),
            CostDeclaration((_fop("mul", e, "se_scale"),), {"se_mul": e, "squeeze_excite": e}, 0),
            CostDeclaration(
                tuple(_bn_ops(e, dequantize=False)), {"batchnorm": e}, 2 * self.out_channels
            ),
        ]
        return _merge(*parts)


class PokeBottleneck(nn.Module):
    """PokeBNN bottleneck ``(N, C_in, H, W) -> (N, 4 * channels, ceil(H/s), ceil(W/s))``:
    1x1 unit to ``channels``, 3x3 unit with the stride, 1x1 unit to ``4 * channels`` with the
    tiled block shortcut. Float in and out (``output_bits = 32``)."""

    output_bits = FLOAT_BITS
    output_signed = True

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

    def forward(self, x: Tensor) -> Tensor:
        y = self.unit2(self.unit1(x))
        return self.unit3(y, block_input=x)

    def inference_ops(self, input_shape: Shape, output_shape: Shape) -> CostDeclaration:
        n, _, height, width = input_shape
        first = (n, self.spec.channels, height, width)
        second = (n, self.spec.channels, output_shape[2], output_shape[3])
        return _merge(
            self.unit1.inference_ops(input_shape, first),
            self.unit2.inference_ops(first, second),
            self.unit3.inference_ops(second, output_shape, block_input_shape=input_shape),
        )


class PokeStem(nn.Module):
    """PokeBNN's stem ``(N, C, H, W) -> (N, out_channels, floor((H-4)/4)+1, ...)``, float out.

    Pixels are quantized to ``input_bits`` (free at inference: they arrive as integers), the
    intermediate DPReLU output to ``activation_bits`` (signed) for the grouped conv.
    """

    output_bits = FLOAT_BITS
    output_signed = True

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
        )
        self.group_norm = _batch_norm(spec.out_channels)
        self.group_activation = DPReLU(spec.out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.activation(self.norm(self.conv(self.input_quantizer(x))))
        x = self.group_conv(self.requantizer(x))
        return self.group_activation(self.group_norm(x))

    def inference_ops(self, input_shape: Shape, output_shape: Shape) -> CostDeclaration:
        n, _, out_h, out_w = output_shape
        middle = (n, self.spec.group_channels, out_h, out_w)
        e1, e2 = math.prod(middle), math.prod(output_shape)
        requant_bits = self.spec.activation_bits
        if requant_bits >= FLOAT_BITS:
            requant = CostDeclaration()
        else:
            requant = CostDeclaration(tuple(_quantize_ops(e1)), {"requantize": e1}, 0)
        conv1_float = self.conv.is_float
        return _merge(
            self.conv.inference_ops(input_shape, middle),
            CostDeclaration(
                tuple(_bn_ops(e1, dequantize=not conv1_float)),
                {"batchnorm": e1},
                2 * self.spec.group_channels,
            ),
            self.activation.inference_ops(middle, middle),
            requant,
            self.group_conv.inference_ops(middle, output_shape),
            CostDeclaration(
                tuple(_bn_ops(e2, dequantize=not self.group_conv.is_float)),
                {"batchnorm": e2},
                2 * self.spec.out_channels,
            ),
            self.group_activation.inference_ops(output_shape, output_shape),
        )


@STEM_BUILDERS.register("pokebnn")
def build_poke_stem(spec: PokeStemSpec, input_channels: int) -> PokeStem:
    """``STEM_BUILDERS["pokebnn"]``."""
    return PokeStem(spec, input_channels)


@BLOCK_BUILDERS.register("pokebnn_bottleneck")
def build_poke_bottleneck(spec: PokeBottleneckSpec, in_channels: int) -> PokeBottleneck:
    """``BLOCK_BUILDERS["pokebnn_bottleneck"]``."""
    return PokeBottleneck(spec, in_channels)
