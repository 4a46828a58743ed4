"""``pikenas verify BUNDLE`` checks every file of the bundle against its program: an altered
``model.onnx``, ``model.qonnx.onnx``, ``run_program.py`` or ``cost.json``, or a missing
``program.json``, makes it exit 1 naming the file (it exited 0 "exact" before)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import pytest

from pikenas.results.export import export_trained
from pikenas.search.cli import main
from pikenas.space.nn.build import build_model
from pikenas.space.zoo import get_zoo_arch


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of tiny-w4a4 with its (random-init) weights, as `pikenas export TRAIN_DIR`."""
    from safetensors.torch import save_file

    source = tmp_path_factory.mktemp("bundle") / "net"
    source.mkdir()
    arch = get_zoo_arch("tiny-w4a4")
    (source / "arch.json").write_text(arch.to_json())
    model = build_model(arch)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(source / "weights.safetensors"))
    (source / "metrics.json").write_text(json.dumps({"test_accuracy": 0.1}))
    return export_trained(source)


def _verify(folder: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["verify", str(folder), "--images", "4", "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip().startswith("{") else {}


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_an_untouched_bundle_verifies(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, data = _verify(bundle, capsys)
    assert code == 0 and data["exact"] and data["failures"] == []


def _shift_logits(path: Path) -> None:
    """The graph's logits plus one: a wrong graph whatever the weights."""
    model = onnx.load(str(path))
    graph = model.graph
    old = graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{old}_raw" if name == old else name for name in node.output]
    graph.initializer.append(onnx.numpy_helper.from_array(np.ones(1, np.float32), "one"))
    graph.node.append(onnx.helper.make_node("Add", [f"{old}_raw", "one"], [old]))
    onnx.save(model, str(path))


def _rewrite(name: str, change: Callable[[Path], None]) -> Callable[[Path], None]:
    def alter(folder: Path) -> None:
        change(folder / name)

    return alter


ALTERATIONS = {
    "model.onnx": _rewrite("model.onnx", _shift_logits),
    "model.qonnx.onnx": _rewrite("model.qonnx.onnx", _shift_logits),
    "run_program.py": _rewrite(
        "run_program.py", lambda p: p.write_text(p.read_text() + "\nprint('extra')\n")
    ),
    "cost.json": _rewrite(
        "cost.json",
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "ace_v1": 1})),
    ),
    "program.json": _rewrite("program.json", lambda p: p.unlink()),
}


@pytest.mark.parametrize("name", sorted(ALTERATIONS))
def test_an_altered_file_fails_verify_naming_it(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    folder = _copy(bundle, tmp_path)
    ALTERATIONS[name](folder)
    code, data = _verify(folder, capsys)
    assert code == 1
    assert not data["exact"]
    assert any(name in failure for failure in data["failures"]), data["failures"]
