"""The proof that the integer program is the network: for every zoo model and for random and
hand-picked mixed-format candidates of the default search space, trained briefly so that nothing
sits at its initial value,

* the numpy runner of the program reproduces the PyTorch eval forward exactly: identical
  integer codes after every requantization, identical values on exact paths (float convs of
  float networks within float32 rounding);
* every intermediate fits its declared width on real inputs;
* the training forward (fake quantization, running statistics) computes the same codes at every
  requantization point, given the same input, except where the exact value is a rounding tie;
* the program's structure and widths depend on the configuration only (a meta-device lowering
  has the same operations and ranges), so ACE counted before training is the ACE of the trained
  network.

Mismatch counts are in the assertion messages (and printed with ``-s``).
"""

from __future__ import annotations

import pytest
import torch

from pikenas.evaluators.cost import count_ace
from pikenas.evaluators.data.datasets import iterate_batches, load_dataset
from pikenas.evaluators.training import loop as training
from pikenas.evaluators.verify import verify
from pikenas.search.config import load_config
from pikenas.space.arch import ArchConfig, ConvQuantSpec, ConvStemSpec, HeadSpec, PikeBlockSpec
from pikenas.space.nn.build import build_model
from pikenas.space.program.builder import lower
from pikenas.space.zoo.catalog import get_zoo_arch, zoo_names
from tests._random_trial import RandomTrial

torch.set_num_threads(1)

SLOW_ZOO = {"pokebnn-0.75x", "pokebnn-2.0x", "pikelpn-3x", "mobilenet_v1-0.75-w4a4"}


def _train_on_noise(model: torch.nn.Module, arch: ArchConfig, steps: int = 5) -> None:
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        size = (8, arch.input_channels, arch.resolution, arch.resolution)
        x = torch.randn(size, generator=generator)
        y = torch.randint(0, arch.num_classes, (8,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _summary(report) -> str:  # noqa: ANN001
    return (
        f"{report.model}: mismatches {report.mismatches} of {report.compared_elements} elements "
        f"({report.mismatch_values[:3]}), overflows {report.overflows[:1]}, "
        f"float rel diff {report.max_float_rel_diff:.2g}, training-forward codes "
        f"{report.surrogate_mismatches} of {report.surrogate_elements} differ "
        f"({report.surrogate_not_ties} not at ties)"
    )


def _check(model: torch.nn.Module, images: torch.Tensor) -> None:
    report = verify(model, images)
    print(_summary(report))
    assert report.exact, _summary(report)
    assert report.max_logit_diff == 0.0 or report.max_float_rel_diff > 0, _summary(report)
    assert report.surrogate_not_ties == 0, _summary(report)
    has_codes = any(v.dtype == "int" for v in model.program().values.values())
    assert report.stages > 0 or not has_codes
    for layer, (seen, declared) in report.widest.items():
        assert seen <= declared, layer
    # ACE from the trained program == ACE before training (the structure is config-only)
    assert report.ace_v2 == count_ace(model.arch).ace_v2


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_ZOO else n for n in zoo_names()],
)
def test_every_zoo_model(name: str) -> None:
    arch = get_zoo_arch(name, resolution=None if name.startswith("tiny-") else 32)
    model = build_model(arch, seed=1)
    _train_on_noise(model, arch)
    images = torch.randn(
        4,
        arch.input_channels,
        arch.resolution,
        arch.resolution,
        generator=torch.Generator().manual_seed(1),
    )
    _check(model, images)


@pytest.fixture(scope="module")
def digits():  # noqa: ANN201
    return load_dataset("digits")


def _trained_on_digits(arch: ArchConfig, splits, seed: int, epochs: int = 1):  # noqa: ANN001, ANN202
    arch = training.fit_arch_to_dataset(arch, splits)
    config = training.TrainConfig(dataset="digits", epochs=epochs, seed=seed, threads=1)
    model, _ = training._fit(arch, config, splits)
    images = next(iter(iterate_batches(splits.val, 64, mean=splits.mean, std=splits.std)))[0]
    return model, images


@pytest.mark.parametrize("chunk", range(5))
def test_fifty_random_candidates_of_the_default_space(chunk: int, digits) -> None:  # noqa: ANN001
    space = load_config().space
    for seed in range(10 * chunk, 10 * chunk + 10):
        arch = space.suggest(RandomTrial(seed))
        model, images = _trained_on_digits(arch, digits, seed)
        _check(model, images)


def _block(**changes: object) -> PikeBlockSpec:
    base = {
        "out_channels": 16,
        "depthwise": ConvQuantSpec(weight_bits=4, weight_quantizer="uniform"),
        "pointwise": ConvQuantSpec(weight_bits=4, weight_quantizer="pow2"),
        "activation_bits": 4,
        "norm": "quantnorm",
        "scale_format": "pow2",
    }
    return PikeBlockSpec(**{**base, **changes})


MIXED = {
    # a float32-scale stem feeding a pow2 QuantNorm block: its multiplier is not a power of two
    # by itself, the whole requantization multiplier is rounded to one
    "float-stem-then-pow2": [_block(), _block(residual=True)],
    "pow2-int8-float32-side-by-side": [
        _block(scale_format="pow2"),
        _block(scale_format="int8", residual=True),
        _block(scale_format="float32", residual=True, activation="prelu"),
        _block(scale_format="int8", activation="dprelu", stride=2, out_channels=24),
    ],
    "residuals-between-differently-scaled-tensors": [
        _block(scale_format="int8", activation_bits=8),
        _block(scale_format="pow2", residual=True, activation_bits=4),
        _block(scale_format="int4", residual=True, activation_bits=2, activation="dprelu"),
        _block(scale_format="float32", residual=True, activation_bits=8, norm="batchnorm"),
    ],
    "binary-and-ternary-convs": [
        _block(
            depthwise=ConvQuantSpec(weight_bits=1, weight_quantizer="binary"),
            pointwise=ConvQuantSpec(weight_bits=2, weight_quantizer="ternary"),
            activation="prelu",
            activation_bits=1,
            norm="batchnorm",
            scale_format="float32",
        ),
        _block(
            depthwise=ConvQuantSpec(weight_bits=2, weight_quantizer="ternary"),
            pointwise=ConvQuantSpec(weight_bits=1, weight_quantizer="binary"),
            activation="dprelu",
            activation_bits=1,
            residual=True,
        ),
        _block(
            pointwise=ConvQuantSpec(
                weight_bits=1, weight_quantizer="binary", weight_granularity="per_tensor"
            ),
            activation="prelu",
            activation_bits=8,
            scale_format="int8",
        ),
    ],
}


@pytest.mark.parametrize("name", sorted(MIXED))
def test_held_out_mixed_formats(name: str, digits) -> None:  # noqa: ANN001
    arch = ArchConfig(
        name=name,
        input_channels=1,
        resolution=8,
        num_classes=10,
        stem=ConvStemSpec(out_channels=16, stride=1, scale_format="float32", norm="batchnorm"),
        blocks=tuple(MIXED[name]),
        head=HeadSpec(),
    )
    model, images = _trained_on_digits(arch, digits, seed=3, epochs=2)
    _check(model, images)


@pytest.mark.parametrize("name", ["tiny-pikelpn", "tiny-binary", "pokebnn-0.5x", "tiny-float"])
def test_the_structure_depends_on_the_configuration_only(name: str) -> None:
    arch = get_zoo_arch(name, resolution=None if name.startswith("tiny-") else 32)
    model = build_model(arch, seed=2)
    _train_on_noise(model, arch, steps=2)
    trained = lower(model.eval())
    with torch.device("meta"):
        shape_only = lower(build_model(arch))
    assert [(o.op, o.layer, o.kind, o.inputs, o.output) for o in trained.ops] == [
        (o.op, o.layer, o.kind, o.inputs, o.output) for o in shape_only.ops
    ]
    ranges = {n: (v.shape, v.dtype, v.bits, v.lo, v.hi) for n, v in trained.values.items()}
    assert ranges == {
        n: (v.shape, v.dtype, v.bits, v.lo, v.hi) for n, v in shape_only.values.items()
    }
    assert trained.constants == shape_only.constants
    assert count_ace(trained).to_dict() == count_ace(arch).to_dict()
