"""The eval forward's program cache follows every change of a weight: in-place writes and new
storage behind the same parameter (``param.data = ...``, ``vector_to_parameters``), which keep
the tensor's id and version counter."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from pikenas.space.nn.build import PikeNet, build_model
from pikenas.space.zoo.catalog import get_zoo_arch

torch.set_num_threads(1)


def _images() -> torch.Tensor:
    return torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _changed(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach() * 1.5 + 0.25


def _assign_data(model: PikeNet) -> None:
    model.head.linear.bias.data = _changed(model.head.linear.bias)


def _vector(model: PikeNet) -> None:
    vector = parameters_to_vector(model.parameters()).detach()
    vector_to_parameters(_changed(vector), model.parameters())


def _in_place(model: PikeNet) -> None:
    with torch.no_grad():
        model.head.linear.bias.add_(0.25)


def _load_state(model: PikeNet) -> None:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["head.linear.bias"] += 0.25
    model.load_state_dict(state)


@pytest.mark.parametrize("change", [_assign_data, _vector, _in_place, _load_state])
def test_a_changed_weight_reaches_the_eval_forward(change: Callable[[PikeNet], None]) -> None:
    arch = get_zoo_arch("tiny-w8a8")
    model = build_model(arch, seed=3).eval()
    before = model(_images())
    change(model)
    fresh = build_model(arch, seed=3).eval()
    fresh.load_state_dict(model.state_dict())
    expected = fresh(_images())
    assert not torch.equal(expected, before)  # the change matters, so the test can fail
    assert torch.equal(model(_images()), expected)


def test_an_unchanged_model_keeps_its_program() -> None:
    model = build_model(get_zoo_arch("tiny-w8a8"), seed=3).eval()
    model(_images())
    assert model.program_on("cpu") is model.program_on("cpu")
