"""QONNX export agreement: for every zoo model (ImageNet ones at 32x32) and 20 random candidates
of the default space trained briefly on digits, the exported graph

* passes ``onnx.checker``, a ``ModelWrapper`` save / load round trip, ``qonnx`` cleanup and shape
  and data-type inference (every tensor shaped);
* runs in qonnx's ``execute_onnx`` to the integer program's logits and to the PyTorch eval
  forward's, exactly on exact networks (within float32 rounding on float ones), on random and
  on real (digits) inputs;
* has, per (input type, weight type) pair, exactly the MACs our program counts at those widths
  (``qonnx.util.inference_cost`` with ``discount_sparsity=False``), so ACE v1 is confirmed by an
  independent counter;
* costs to the same ACE v1 / ACE v2 / MACs / params and breakdown rows with ``pikenas ace``
  (the importer), before and after cleanup; and so does the bundle's plain ``model.onnx``.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

pytest.importorskip("qonnx")

from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.transformation.infer_datatypes import InferDataTypes  # noqa: E402
from qonnx.transformation.infer_shapes import InferShapes  # noqa: E402
from qonnx.util.cleanup import cleanup_model  # noqa: E402
from qonnx.util.inference_cost import inference_cost  # noqa: E402

from pikenas.evaluators.cost import count_ace, count_onnx  # noqa: E402
from pikenas.evaluators.data.datasets import iterate_batches, load_dataset  # noqa: E402
from pikenas.evaluators.training import loop as training  # noqa: E402
from pikenas.results.export._qonnx_check import run_qonnx  # noqa: E402
from pikenas.search.config import load_config  # noqa: E402
from pikenas.space.nn.build import build_model  # noqa: E402
from pikenas.space.program.ir import IntegerProgram, range_bits  # noqa: E402
from pikenas.space.program.onnx.export_onnx import program_to_onnx  # noqa: E402
from pikenas.space.program.onnx.export_qonnx import program_to_qonnx  # noqa: E402
from pikenas.space.zoo.catalog import get_zoo_arch, zoo_names  # noqa: E402
from tests._random_trial import RandomTrial  # noqa: E402

torch.set_num_threads(1)

# qonnx's tools (cleanup, shape inference, execute_onnx, inference_cost) scan the graph per
# node: on PokeBNN's ~1,600 nodes one model takes over 15 minutes, so PokeBNN is checked with
# onnx.checker and the importer (exact ACE) only; its execution agreement is the same code path
# as the other zoo models' (the node types are the same).
POKEBNN = {"pokebnn-0.5x", "pokebnn-0.75x", "pokebnn-1.0x", "pokebnn-2.0x"}
SLOW = POKEBNN | {"pikelpn-3x"}


def _rows(report) -> list[tuple]:  # noqa: ANN001
    return sorted(
        (r.layer, r.op, r.count, r.bits_a, r.bits_b, r.float_operands, r.cost)
        for r in report.breakdown
    )


def _activation_type(program: IntegerProgram, name: str) -> str:
    value = program.values[name]
    if value.dtype == "float":
        return "FLOAT32"
    if value.bits == 1:
        return "BIPOLAR"
    return f"UINT{value.bits}" if value.lo >= 0 else f"INT{value.bits}"


def _weight_type(program: IntegerProgram, name: str) -> str:
    """The stated mapping: binary BIPOLAR; uniform b-bit INTb (INT(b+1) where a pow2 QuantNorm's
    sign fold made a code +2^(b-1)); ternary INT2; b-bit pow2 (b >= 3) FLOAT<b-1,0,1> (a
    minifloat with no mantissa: the codes are powers of two)."""
    constant = program.constants[name]
    if constant.dtype == "float":
        return "FLOAT32"
    if constant.bits == 1:
        return "BIPOLAR"
    magnitude = max(abs(constant.lo), abs(constant.hi))
    if constant.bits >= 3 and magnitude == 2 ** (2 ** (constant.bits - 1) - 2):
        return f"FLOAT<{constant.bits - 1},0,1>"
    if magnitude == 2 ** (constant.bits - 1):
        over = program.arrays[name].max(initial=0) >= magnitude
        return f"INT{constant.bits + 1}" if over else f"INT{constant.bits}"
    return f"INT{range_bits(-magnitude, magnitude)}"


def _expected_macs(program: IntegerProgram) -> Counter:
    macs: Counter = Counter()
    for op in program.ops:
        if op.op in ("conv", "linear"):
            x, w = op.inputs
            count = program.values[op.output].elements * int(
                np.prod(program.constants[w].shape[1:])
            )
            macs[(_activation_type(program, x), _weight_type(program, w))] += count
        if op.op == "sum" and op.attrs["mode"] == "window":  # a sum pool: a ones-weight Conv
            out = program.values[op.output]
            macs[(_activation_type(program, op.inputs[0]), "FLOAT32")] += (
                out.elements * op.attrs["kernel"] ** 2
            )
    return macs


def _qonnx_macs(model) -> Counter:  # noqa: ANN001
    result = inference_cost(ModelWrapper(model), discount_sparsity=False)["total_cost"]
    macs: Counter = Counter()
    for key, value in result.items():
        if key.startswith("op_mac_"):
            _, _, act, weight = key.split("_")
            macs[(act, weight)] += int(value)
    return macs


def _agree(
    model: torch.nn.Module, images: np.ndarray, tmp_path, *, qonnx_tools: bool = True
) -> float:  # noqa: ANN001, E501
    """Every check of the module docstring; returns the largest logit difference."""
    import onnx

    program = model.program()
    graph = program_to_qonnx(program)
    onnx.checker.check_model(graph)
    native = count_ace(program)
    plain = count_onnx(program_to_onnx(program))  # the bundle's model.onnx: the same price
    assert _rows(plain) == _rows(native) and plain.ace_v2 == native.ace_v2
    if not qonnx_tools:
        imported = count_onnx(graph)
        assert _rows(imported) == _rows(native) and imported.ace_v2 == native.ace_v2
        return 0.0
    path = tmp_path / "model.qonnx.onnx"
    ModelWrapper(graph).save(str(path))
    reloaded = ModelWrapper(str(path))
    assert len(reloaded.graph.node) == len(graph.graph.node)
    assert len(reloaded.graph.quantization_annotation) == len(graph.graph.quantization_annotation)
    cleaned = cleanup_model(reloaded).transform(InferShapes()).transform(InferDataTypes())
    assert cleaned.check_all_tensor_shapes_specified()
    # execution: qonnx == integer program == PyTorch eval forward
    actual = run_qonnx(graph, images)
    expected = program.run(images).output
    with torch.no_grad():
        eager = model(torch.from_numpy(images)).double().numpy()
    difference = float(np.abs(actual - expected).max())
    if program.values[program.output].exact:
        assert difference == 0.0, difference
        assert np.array_equal(expected, eager.astype(np.float32))
    else:
        scale = float(np.abs(expected).max())
        assert difference <= 1e-4 * scale and np.allclose(
            eager, expected, rtol=1e-4, atol=1e-4 * scale
        )
    # MACs per type pair: qonnx's inference_cost == our per-layer MACs and widths
    assert _qonnx_macs(graph) == _expected_macs(program)
    # ACE of the graph (the importer) == ACE of the program, raw and cleaned
    for source in (graph, cleaned.model):
        imported = count_onnx(source)
        assert (imported.ace_v1, imported.ace_v2, imported.macs, imported.params) == (
            native.ace_v1,
            native.ace_v2,
            native.macs,
            native.params,
        )
        assert _rows(imported) == _rows(native)
    return difference


def _train_on_noise(model: torch.nn.Module, shape: tuple[int, ...], classes: int) -> None:
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(3):
        x = torch.randn((8, *shape), generator=generator)
        y = torch.randint(0, classes, (8,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in zoo_names()]
)
def test_every_zoo_model(name: str, tmp_path) -> None:  # noqa: ANN001
    arch = get_zoo_arch(name, resolution=None if name.startswith("tiny-") else 32)
    model = build_model(arch, seed=1)
    shape = (arch.input_channels, arch.resolution, arch.resolution)
    _train_on_noise(model, shape, arch.num_classes)
    rng, count = np.random.default_rng(1), 1 if name in SLOW else 2
    if arch.input is not None:  # a raw-pixel network (QONNX input UINT8): pixels 0..255
        images = rng.integers(0, 256, (count, *shape)).astype(np.float64)
    else:
        images = rng.standard_normal((count, *shape))
    difference = _agree(model, images.astype(np.float32), tmp_path, qonnx_tools=name not in POKEBNN)
    print(f"{name}: qonnx - program max |diff| {difference}")


@pytest.fixture(scope="module")
def digits():  # noqa: ANN201
    return load_dataset("digits")


@pytest.mark.parametrize("chunk", range(2))
def test_twenty_random_candidates_on_random_and_digits_inputs(chunk: int, digits, tmp_path) -> None:  # noqa: ANN001
    space = load_config().space
    for seed in range(100 + 10 * chunk, 110 + 10 * chunk):
        arch = training.fit_arch_to_dataset(space.suggest(RandomTrial(seed)), digits)
        config = training.TrainConfig(dataset="digits", epochs=1, seed=seed, threads=1)
        model, _ = training._fit(arch, config, digits)
        model.eval()
        batch = next(iter(iterate_batches(digits.val, 4)))[0]  # raw pixels, as the net takes
        noise = np.random.default_rng(seed).integers(0, 256, (2, *batch.shape[1:]))
        images = np.concatenate([batch.numpy(), noise]).astype(np.float32)
        _agree(model, images, tmp_path)
