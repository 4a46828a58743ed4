"""The compiled uniform quantizer: the eager quantizer's codes bit for bit, its gradients up to
the order of a sum, and the eager one whenever compiling fails."""

from __future__ import annotations

import logging

import pytest
import torch

from pikenas.space.nn import _compiled
from pikenas.space.nn._compiled import _CompiledLevels, compiled_quantizers, uniform_levels
from pikenas.space.nn._ste import _LevelsFunction

torch.set_num_threads(1)


def _inputs(shape: tuple[int, ...], channels_last: bool, step: float) -> torch.Tensor:
    """Normal values plus exact ties ``(k + 1/2) * step`` and values outside the clip range."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 6 * step
    flat = x.view(-1)
    flat[:40] = (torch.arange(40, dtype=torch.float32) - 20 + 0.5) * step  # ties
    flat[40:44] = torch.tensor([-1e6, 1e6, 15 * step, 0.0])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(True)


@pytest.mark.parametrize("shape", [(4, 8, 6, 6), (3, 16, 5, 7)])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("low", "high"), [(0.0, 15.0), (-128.0, 127.0)])
def test_codes_equal_the_eager_quantizer_and_gradients_agree(shape, channels_last, low, high):
    scale = torch.tensor([0.37], requires_grad=True)
    x_eager = _inputs(shape, channels_last, 0.37)
    x_compiled = x_eager.detach().clone().requires_grad_(True)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    eager = _LevelsFunction.apply(x_eager, scale, "float32", (), low, high, 0.01, None)
    eager.backward(grad)
    eager_scale_grad, scale.grad = scale.grad.clone(), None
    compiled = _CompiledLevels.apply(x_compiled, scale, "float32", low, high, 0.01)
    compiled.backward(grad)
    assert torch.equal(compiled, eager)  # bit for bit, ties included
    assert torch.equal(x_compiled.grad, x_eager.grad)
    torch.testing.assert_close(scale.grad, eager_scale_grad, rtol=1e-4, atol=1e-6)


def test_only_switched_on_and_per_tensor_scales_take_the_compiled_path():
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    scale = torch.tensor([0.5], requires_grad=True)
    assert uniform_levels(x, scale, "float32", 0.0, 15.0, 0.1) is None  # off by default
    with compiled_quantizers():
        assert uniform_levels(x, scale, "float32", 0.0, 15.0, 0.1) is not None
        per_channel = torch.full((4,), 0.5, requires_grad=True)
        assert uniform_levels(x, per_channel, "float32", 0.0, 15.0, 0.1) is None
        assert uniform_levels(x.flatten(1), scale, "float32", 0.0, 15.0, 0.1) is None
    assert uniform_levels(x, scale, "float32", 0.0, 15.0, 0.1) is None  # and off again


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    def broken(function, **options):  # noqa: ANN001, ANN003, ANN202
        def run(*args):  # noqa: ANN002, ANN202
            raise RuntimeError("no C++ compiler here")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(_compiled, "_STATE", {"on": False, "failed": False, "kernels": None})
    scale = torch.tensor([0.37], requires_grad=True)
    x = _inputs((2, 4, 5, 5), False, 0.37)
    expected = _LevelsFunction.apply(x, scale, "float32", (), 0.0, 15.0, 0.01, None)
    with caplog.at_level(logging.WARNING, logger="pikenas"), compiled_quantizers():
        got = _CompiledLevels.apply(x, scale, "float32", 0.0, 15.0, 0.01)
        got.sum().backward()
        assert uniform_levels(x, scale, "float32", 0.0, 15.0, 0.01) is None  # eager from now on
    assert torch.equal(got, expected)
    warnings = [r for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(warnings) == 1 and "no C++ compiler here" in warnings[0].getMessage()


def test_a_bfloat16_input_is_quantized_in_float32_as_the_eager_quantizer_does():
    scale = torch.tensor([0.37], requires_grad=True)
    x = _inputs((2, 4, 6, 6), True, 0.37).detach().to(torch.bfloat16).requires_grad_(True)
    eager = _LevelsFunction.apply(x, scale, "float32", (1, 1, 1, 1), 0.0, 15.0, 0.01, None)
    compiled = _CompiledLevels.apply(x, scale, "float32", 0.0, 15.0, 0.01)
    assert compiled.dtype == eager.dtype == torch.float32
    assert torch.equal(compiled, eager)
