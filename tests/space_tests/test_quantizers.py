"""Properties of every registered quantizer, at every bit-width and scale format it takes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pikenas.space.arch import QUANTIZER_BITS, SCALE_FORMATS
from pikenas.space.errors import ArchConfigError, UnknownNameError
from pikenas.space.nn.quantizers import (
    QUANTIZERS,
    BinaryQuantizer,
    Pow2Quantizer,
    make_activation_quantizer,
    make_quantizer,
    quantize_scale,
)

torch.set_num_threads(1)

CASES = [
    (family, bits, granularity, scale_format)
    for family in QUANTIZERS.names()
    for bits in QUANTIZER_BITS[family]
    for granularity in ("per_tensor", "per_channel")
    for scale_format in SCALE_FORMATS
    if family != "float" or (granularity, scale_format) == ("per_tensor", "float32")
]
CHANNELS = 4


def _weights(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(CHANNELS, 3, 3, 3, generator=generator) * 0.3


def _built(family: str, bits: int, granularity: str, scale_format: str) -> torch.nn.Module:
    quantizer = make_quantizer(
        family, bits, granularity=granularity, channels=CHANNELS, scale_format=scale_format
    )
    quantizer.init_from(_weights())
    return quantizer


def _groups(y: torch.Tensor, granularity: str) -> list[torch.Tensor]:
    return list(y) if granularity == "per_channel" else [y]


def test_registry_covers_every_family() -> None:
    assert sorted(QUANTIZERS.names()) == sorted(QUANTIZER_BITS)
    with pytest.raises(UnknownNameError, match="choose one of"):
        make_quantizer("log", 4)


@pytest.mark.parametrize(("family", "bits", "granularity", "scale_format"), CASES[::4])
def test_attributes_visible(family: str, bits: int, granularity: str, scale_format: str) -> None:
    quantizer = _built(family, bits, granularity, scale_format)
    assert quantizer.family == family
    assert quantizer.bits == bits
    assert quantizer.granularity == granularity
    assert quantizer.scale_format == scale_format
    assert isinstance(quantizer.signed, bool)
    assert quantizer.__doc__ and "Gradient" in quantizer.__doc__


@pytest.mark.parametrize(("family", "bits", "granularity", "scale_format"), CASES)
def test_levels_and_idempotence(
    family: str, bits: int, granularity: str, scale_format: str
) -> None:
    quantizer = _built(family, bits, granularity, scale_format)
    x = _weights(1) * 3  # wider than the weights, so clipping happens too
    y = quantizer(x)
    if family != "float":
        for group in _groups(y, granularity):
            assert len(torch.unique(group)) <= 2**bits
    torch.testing.assert_close(quantizer(y), y, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("family", "bits", "granularity", "scale_format"), CASES)
def test_straight_through_gradient(
    family: str, bits: int, granularity: str, scale_format: str
) -> None:
    quantizer = _built(family, bits, granularity, scale_format)
    x = _weights(2)
    limits = quantizer.clip_range(x)
    if limits is not None:
        low, high = limits
        inside = (x > low * 0.999) & (x < high * 0.999)
        x = torch.where(inside, x, 0.5 * (low + high).expand_as(x))
    x = x.clone().requires_grad_(True)
    quantizer(x).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.ones_like(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale_format", SCALE_FORMATS)
def test_gradient_zero_outside_the_range(scale_format: str) -> None:
    quantizer = make_quantizer("uniform", 4, scale_format=scale_format)
    step = float(quantizer.scale_for(torch.zeros(1)).detach())
    x = torch.tensor([100.0 * step, -100.0 * step, 0.3 * step], requires_grad=True)
    quantizer(x).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]


def test_uniform_step_gets_lsq_gradient() -> None:
    quantizer = make_quantizer("uniform", 4, signed=True)
    with torch.no_grad():
        quantizer.scale.fill_(1.0)
    x = torch.tensor([0.25, 100.0])  # inside: round(v) - v = -0.25; above: q_max = 7
    quantizer(x).sum().backward()
    grad_factor = 1.0 / (2 * 7) ** 0.5
    torch.testing.assert_close(quantizer.scale.grad, torch.tensor([(-0.25 + 7) * grad_factor]))


@pytest.mark.parametrize("bits", QUANTIZER_BITS["pow2"])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_pow2_outputs_are_signed_powers_of_two(bits: int, granularity: str) -> None:
    quantizer = _built("pow2", bits, granularity, "pow2")
    y = quantizer(_weights(3) * 2)
    nonzero = y[y != 0].abs()
    assert nonzero.numel() > 0
    exponents = torch.log2(nonzero)
    assert torch.equal(exponents, torch.round(exponents))  # scale is a power of two too


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_pow2_outputs_relative_to_a_float_scale(granularity: str) -> None:
    quantizer = _built("pow2", 4, granularity, "float32")
    x = _weights(4)
    ratio = (quantizer(x) / quantizer.scale_for(x)).abs()
    exponents = torch.log2(ratio[ratio != 0])
    torch.testing.assert_close(exponents, torch.round(exponents), rtol=0, atol=1e-5)
    assert int(exponents.min()) >= Pow2Quantizer(4).min_exponent


@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
def test_binary_outputs_are_plus_minus_scale(granularity: str) -> None:
    quantizer = _built("binary", 1, granularity, "float32")
    x = _weights(5)
    y = quantizer(x)
    scale = quantizer.scale_for(x).expand_as(x)
    assert torch.equal(y.abs(), scale)
    assert torch.equal(torch.sign(y), torch.where(x >= 0, 1.0, -1.0))
    expected_scale = x.abs().mean(dim=(1, 2, 3)) if granularity == "per_channel" else x.abs().mean()
    torch.testing.assert_close(scale.reshape(CHANNELS, -1)[:, 0], expected_scale.expand(CHANNELS))


def test_binary_activation_is_a_pure_sign() -> None:
    quantizer = make_activation_quantizer(1, signed=True)
    assert isinstance(quantizer, BinaryQuantizer) and quantizer.scale_for(torch.ones(1)) is None
    assert quantizer(torch.tensor([-0.2, 0.0, 3.0])).tolist() == [-1.0, 1.0, 1.0]


def test_ternary_levels_follow_twn() -> None:
    quantizer = make_quantizer("ternary", 2, granularity="per_tensor")
    x = torch.tensor([-1.0, -0.1, 0.0, 0.2, 0.9])  # mean|x| = 0.44, delta = 0.308
    y = quantizer(x)
    assert y.tolist() == pytest.approx([-0.95, 0.0, 0.0, 0.0, 0.95])


@pytest.mark.parametrize("bits", [16, 8, 4])
def test_int_scales_take_at_most_2_to_the_n_values(bits: int) -> None:
    scales = torch.rand(300, generator=torch.Generator().manual_seed(0)) + 1e-3
    quantized = quantize_scale(scales, f"int{bits}")
    assert len(torch.unique(quantized)) <= 2**bits
    # N-bit integers times one shared power of two, the largest as large as it can be
    shared = 2.0 ** -torch.floor(torch.log2((2**bits - 1) / scales.max()))
    integers = quantized / shared
    torch.testing.assert_close(integers, torch.round(integers), rtol=0, atol=0)
    assert integers.max() <= 2**bits - 1 and integers.max() > (2**bits - 1) / 2
    assert quantized.min() > 0


def test_pow2_scales_are_powers_of_two_and_pass_gradient() -> None:
    scales = torch.tensor([0.3, 1.0, 5.0, 0.011], requires_grad=True)
    quantized = quantize_scale(scales, "pow2")
    assert quantized.tolist() == [0.25, 1.0, 4.0, 2.0**-7]
    quantized.sum().backward()
    torch.testing.assert_close(scales.grad, torch.ones(4))


@pytest.mark.parametrize(("family", "bits"), [("uniform", 4), ("pow2", 4), ("binary", 1)])
@pytest.mark.parametrize("scale_format", ["int4", "pow2"])
def test_quantizer_scales_are_double_quantized(family: str, bits: int, scale_format: str) -> None:
    quantizer = _built(family, bits, "per_channel", scale_format)
    scale = quantizer.scale_for(_weights(6)).reshape(-1)
    if scale_format == "pow2":
        exponents = torch.log2(scale)
        assert torch.equal(exponents, torch.round(exponents))
    else:  # int4: 4-bit integers times one shared power of two
        shared = 2.0 ** -torch.floor(torch.log2(15 / scale.max()))
        integers = scale / shared
        torch.testing.assert_close(integers, torch.round(integers), rtol=0, atol=0)
        assert integers.max() <= 15


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_activation_quantizer_unsigned_levels(bits: int) -> None:
    quantizer = make_activation_quantizer(bits, signed=False)
    y = quantizer(torch.linspace(-3, 3, 1001))
    assert len(torch.unique(y)) <= 2**bits
    if bits > 1:
        assert float(y.min().detach()) == 0.0


def test_bad_arguments_raise_arch_config_error() -> None:
    with pytest.raises(ArchConfigError, match="bits=3"):
        make_quantizer("binary", 3)
    with pytest.raises(ArchConfigError, match="scale_format"):
        make_quantizer("uniform", 4, scale_format="int3x")
    with pytest.raises(ArchConfigError, match="granularity"):
        make_quantizer("uniform", 4, granularity="per_row")


@pytest.mark.parametrize(("family", "bits", "granularity", "scale_format"), CASES[::3])
def test_runs_on_the_meta_device(
    family: str, bits: int, granularity: str, scale_format: str
) -> None:
    with torch.device("meta"):
        quantizer = make_quantizer(
            family, bits, granularity=granularity, channels=CHANNELS, scale_format=scale_format
        )
        weights = torch.empty(CHANNELS, 3, 3, 3)
        quantizer.init_from(weights)
        y = quantizer(weights)
    assert y.device.type == "meta" and y.shape == weights.shape


@settings(max_examples=40, deadline=None)
@given(
    bits=st.sampled_from([2, 3, 4, 8]),
    signed=st.booleans(),
    values=st.lists(st.floats(-50, 50, allow_nan=False, width=32), min_size=1, max_size=64),
    step=st.floats(1e-3, 10.0),
)
def test_uniform_property(bits: int, signed: bool, values: list[float], step: float) -> None:
    quantizer = make_quantizer("uniform", bits, signed=signed)
    with torch.no_grad():
        quantizer.scale.fill_(step)
    x = torch.tensor(values)
    y = quantizer(x).detach()
    assert len(torch.unique(y)) <= 2**bits
    torch.testing.assert_close(quantizer(y), y, rtol=1e-6, atol=1e-6)
    actual_step = quantizer.scale_for(x).reshape(()).detach()
    assert float((y / actual_step - torch.round(y / actual_step)).abs().max()) < 1e-3
    # never farther than half a step from x inside the range
    low, high = quantizer.clip_range(x)
    inside = (x >= low) & (x <= high)
    assert bool(((y - x).abs()[inside] <= actual_step * 0.5 + 1e-5).all())


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("channels_last", [True, False])
def test_fused_training_path_equals_the_plain_ops(
    bits: int, signed: bool, channels_last: bool
) -> None:
    """Training uses one fused autograd node; export / no-grad use plain ops: same results."""
    quantizer = make_activation_quantizer(bits, signed=signed, scale_format="pow2")
    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(bits)) * 2
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    upstream = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(7))
    results = []
    for fused in (True, False):
        quantizer.zero_grad()
        leaf = x.clone().requires_grad_(True)
        if fused:
            y = quantizer(leaf)
        else:
            monkeypatched = torch.jit.is_tracing  # force the plain path via the tracing flag
            torch.jit.is_tracing = lambda: True  # type: ignore[assignment]
            try:
                y = quantizer(leaf)
            finally:
                torch.jit.is_tracing = monkeypatched  # type: ignore[assignment]
        assert y.grad_fn is not None
        (y * upstream).sum().backward()
        results.append((y.detach(), leaf.grad, quantizer.scale.grad.clone()))
    (y_fused, dx_fused, ds_fused), (y_plain, dx_plain, ds_plain) = results
    assert "LevelsFunction" in type(quantizer(x.requires_grad_(True)).grad_fn).__name__
    torch.testing.assert_close(y_fused, y_plain)
    torch.testing.assert_close(dx_fused, dx_plain)
    torch.testing.assert_close(ds_fused, ds_plain)


def test_fused_sign_equals_the_plain_ops() -> None:
    quantizer = make_activation_quantizer(1, signed=True)
    x = torch.tensor([-2.0, -0.5, 0.0, 0.7, 1.5], requires_grad=True)
    y = quantizer(x)
    y.sum().backward()
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize(("family", "bits", "granularity", "scale_format"), CASES)
def test_output_is_exactly_codes_times_scale(
    family: str, bits: int, granularity: str, scale_format: str
) -> None:
    """What the integer program stores (codes inside the configured range, one scale per
    channel) is exactly what the training forward uses."""
    quantizer = _built(family, bits, granularity, scale_format)
    x = _weights(2) * 2
    if family == "float":
        with pytest.raises(ArchConfigError, match="no integer codes"):
            quantizer.codes_and_scale(x)
        return
    codes, scale = quantizer.codes_and_scale(x)
    low, high = quantizer.code_range()
    assert torch.equal(codes, torch.round(codes))
    assert codes.min() >= low and codes.max() <= high
    assert (scale > 0).all() and scale.numel() in (1, CHANNELS)
    view = scale.view(-1, 1, 1, 1) if scale.numel() > 1 else scale
    assert torch.equal(quantizer(x), codes * view)


def test_rounding_is_half_up() -> None:
    quantizer = make_activation_quantizer(4, signed=True)
    with torch.no_grad():
        quantizer.scale.fill_(1.0)
    ties = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    assert quantizer(ties).tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("bits", [2, 3, 4, 5])
def test_pow2_codes_are_integers_up_to_2_to_the_span(bits: int) -> None:
    quantizer = make_quantizer("pow2", bits, channels=CHANNELS, granularity="per_channel")
    quantizer.init_from(_weights())
    low, high = quantizer.code_range()
    assert high == 2 ** (2 ** (bits - 1) - 2) and low == -high
    codes, _ = quantizer.codes_and_scale(_weights(3))
    nonzero = codes[codes != 0].abs()
    assert torch.equal(torch.log2(nonzero), torch.round(torch.log2(nonzero)))


@pytest.mark.parametrize(("family", "bits", "granularity", "scale_format"), CASES[::3])
def test_code_scale_is_the_scale_of_codes_and_scale(
    family: str, bits: int, granularity: str, scale_format: str
) -> None:
    if family == "float":
        return
    quantizer = _built(family, bits, granularity, scale_format)
    x = _weights(5)
    assert torch.equal(quantizer.code_scale(x), quantizer.codes_and_scale(x)[1])


# ---- fused training nodes: the same values and gradients as the plain ops ------------------
def test_sign_zero_up_is_the_sign_with_zeros_positive() -> None:
    from pikenas.space.nn._fixed_point import sign_zero_up

    x = torch.tensor([-0.0, 0.0, 1e-45, -1e-45, 1e-30, -1e-30, 3.0, -2.0, float("inf")])
    expected = torch.where(x >= 0, 1.0, -1.0)
    assert torch.equal(sign_zero_up(x), expected)
    assert torch.equal(sign_zero_up(x.double()), expected.double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4, 6, 5, 5), (7, 6)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_prelu_equals_the_two_slope_form(
    dtype: torch.dtype, shape: tuple[int, ...], channels_last: bool
) -> None:
    """Forward bit-equal to ``x * where(x >= 0, 1, a)`` (zeros included), gradients equal
    (``x``: exactly; the slope's sum: up to summation order)."""
    from pikenas.space.nn._ste import prelu

    if channels_last and len(shape) != 4:
        pytest.skip("channels_last needs 4-D tensors")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator, dtype=dtype)
    x.view(-1)[:2] = torch.tensor([0.0, -0.0], dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    slope = torch.randn(shape[1], generator=generator, dtype=dtype)
    grad = torch.randn(shape, generator=generator, dtype=dtype)
    view = (1, -1, *([1] * (len(shape) - 2)))
    results = []
    for fused in (False, True):
        xs, a = x.clone().requires_grad_(), slope.clone().requires_grad_()
        if fused:
            y = prelu(xs, a)
        else:
            y = xs * torch.where(xs >= 0, torch.ones_like(a).view(view), a.view(view))
        y.backward(grad)
        results.append((y.detach(), xs.grad, a.grad))
    (y0, gx0, ga0), (y1, gx1, ga1) = results
    assert torch.equal(y0, y1) and torch.equal(gx0, gx1)
    torch.testing.assert_close(ga0, ga1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batch_affine_has_the_batch_norm_gradient(channels_last: bool) -> None:
    """``x * m + b`` with the gradient of training-mode batch norm (through the statistics)
    for ``weight`` / ``shift``: equal to ``F.batch_norm`` in float64."""
    from pikenas.space.nn._ste import batch_affine

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 5, 5, generator=generator, dtype=torch.float64) * 2 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.rand(3, generator=generator, dtype=torch.float64) + 0.5
    shift = torch.randn(3, generator=generator, dtype=torch.float64)
    grad = torch.randn(8, 3, 5, 5, generator=generator, dtype=torch.float64)
    mean, var = torch.batch_norm_update_stats(x, None, None, 0.1)
    inverse_std = torch.rsqrt(var + 1e-5)
    m = weight * inverse_std
    results = []
    for fused in (False, True):
        xs, w, s = (t.clone().requires_grad_() for t in (x, weight, shift))
        if fused:
            y = batch_affine(xs, w, s, m, s.detach() - m * mean, mean, inverse_std, 1e-5)
        else:
            y = torch.nn.functional.batch_norm(xs, None, None, w, s, True, 0.1, 1e-5)
        y.backward(grad)
        results.append((y.detach(), xs.grad, w.grad, s.grad))
    for fused, plain in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
