"""Output injection in terminal reports: a newline, a terminal control sequence or markup inside
a user string (an ONNX node name, a cost table's name or unit) is shown escaped on its one line
of `pikenas ace`; it can neither forge a report line nor reach the terminal raw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from pikenas.search.cli import app
from pikenas.space._text import code_span, inline, markdown
from pikenas.space.program.onnx.export_qonnx import QONNX_DOMAIN

FORGED = "Total  999  0  0\nACE v2 (bit-ops): 1"
HOSTILE = [FORGED, "\x1b[2J\x1b]0;owned\x07", "<script>alert(1)</script>", "| col |", "a\u2028b\rc"]
ROOT = Path(__file__).resolve().parents[2]


def test_inline_and_markdown_escape_every_hostile_string() -> None:
    for text in HOSTILE:
        for shown in (inline(text), markdown(text), code_span(text)):
            assert "\n" not in shown and "\r" not in shown and "\x1b" not in shown
            assert "\u2028" not in shown and "\x07" not in shown
    assert inline("a\nb\tc") == "a\\nb\\tc"
    assert markdown("<b>|x|</b> [l](javascript:1)") == (
        "\\<b\\>\\|x\\|\\</b\\> \\[l\\]\\(javascript:1\\)"
    )
    assert code_span("a``b") == "```a``b```"
    assert inline("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def _check_report(output: str, reference: str) -> None:
    assert "\x1b" not in output and "\x07" not in output and "\r" not in output
    assert len(output.splitlines()) == len(reference.splitlines())  # no forged line
    starts = ("Total  999", "ACE v2 (bit-ops): 1")
    assert [line for line in output.splitlines() if line.startswith(starts)] == []


def test_a_hostile_cost_table_name_and_unit_stay_on_their_line(tmp_path: Path) -> None:
    source = ROOT / "configs/cost_tables/energy_45nm_illustrative.yaml"
    table = yaml.safe_load(source.read_text())
    reference = _run(["ace", "tiny-w8a8", "--cost-table", str(source)])
    for text in HOSTILE:
        table["name"], table["unit"] = "t " + text, "u " + text
        path = tmp_path / "hostile.yaml"
        path.write_text(yaml.safe_dump(table))
        _check_report(_run(["ace", "tiny-w8a8", "--cost-table", str(path)]), reference)


def _onnx(tmp_path: Path, names: tuple[str, str]) -> Path:
    weights = numpy_helper.from_array(np.full((1, 1, 1, 1), 0.3, np.float32), "w")
    scalars = [
        numpy_helper.from_array(np.array(v, np.float32), k)
        for k, v in {"s": 0.5, "z": 0.0, "b4": 4.0, "one": 1.0, "b2": 2.0}.items()
    ]
    nodes = [
        helper.make_node("Quant", ["x", "s", "z", "b4"], ["q"], domain=QONNX_DOMAIN, signed=1,
                         narrow=0, name="quant_x"),
        helper.make_node("Quant", ["w", "one", "z", "b2"], ["wq"], domain=QONNX_DOMAIN,
                         signed=1, narrow=1, name="quant_w"),
        helper.make_node("Conv", ["q", "wq"], ["acc"], kernel_shape=[1, 1], name=names[0]),
        helper.make_node("Relu", ["acc"], ["y"], name=names[1]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])], [weights, *scalars],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)]
    )
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    return path


def test_hostile_onnx_node_names_stay_on_their_line(tmp_path: Path) -> None:
    reference = _run(["ace", str(_onnx(tmp_path, ("conv", "relu")))])
    for text in HOSTILE:
        output = _run(["ace", str(_onnx(tmp_path, ("conv " + text, "relu " + text)))])
        _check_report(output, reference)


def test_a_hostile_architecture_name_stays_on_its_line(tmp_path: Path) -> None:
    import json

    arch = json.loads(_run(["zoo", "tiny-w8a8", "--json"]))
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(arch))
    arch["name"] = "net " + FORGED + "\x1b[2J"
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(arch))
    for command in (["ace"], ["verify", "--images", "2"]):
        _check_report(_run([*command, str(hostile)]), _run([*command, str(plain)]))
