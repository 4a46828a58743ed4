"""Hostile integer programs: ``program.json`` / ``program.safetensors`` of the wrong types, deep
nesting, missing keys, shapes that do not follow from their operation, absurd work; and the
bundle's ``run_program.py`` on bad inputs: one line, exit 2, never a traceback or a long loop."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pikenas.space.program.ir as ir
from pikenas.space.program.builder import ProgramBuilder
from pikenas.space.program.ir import IntegerProgram, ProgramError


def _program(folder: Path) -> IntegerProgram:
    """input (2, 4, 4) float -> codes in [-8, 7] -> 2x2 window sum -> 1x1 conv -> flatten."""
    builder = ProgramBuilder(with_constants=True)
    x = builder.input((2, 4, 4))
    q = builder.round(builder.clip(x, -8.0, 7.0, kind="q"), -8, 7, kind="q")
    pooled = builder.sum(q, mode="window", kind="pool", kernel=2, stride=2, padding=[0, 0, 0, 0])
    weight = builder.constant(
        "w",
        np.array([[1, -1], [2, 0], [0, 3]]).reshape(3, 2, 1, 1),
        shape=(3, 2, 1, 1),
        dtype="int",
        lo=-3,
        hi=3,
    )
    acc = builder.conv(pooled, weight, stride=1, padding=(0, 0, 0, 0), groups=1)
    flat = builder.reshape("flatten", acc, (12,))
    program = builder.program(x, flat, "hostile")
    program.save(folder)
    return program


def _damaged(folder: Path, damage: Callable[[dict[str, Any]], Any]) -> None:
    _program(folder)
    data = json.loads((folder / "program.json").read_text())
    damage(data)
    (folder / "program.json").write_text(json.dumps(data))


def _op(data: dict[str, Any], op: str) -> dict[str, Any]:
    return next(o for o in data["ops"] if o["op"] == op)


def _value(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in data["values"] if v["name"] == name)


def _window_sum_of_any_size(data: dict[str, Any]) -> None:
    """A window sum whose kernel is 10^5 on a 4x4 input: 10^10 loop turns in the old runner."""
    _op(data, "sum")["attrs"].update(kernel=100_000, terms=10**10)


DAMAGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "a list, not an object": lambda d: d.clear() or d.update(values=[]) or None,
    "shape of strings": lambda d: _value(d, "input").update(shape="abc"),
    "shape of floats": lambda d: d["values"][1].update(shape=[2.5, 4, 4]),
    "negative size": lambda d: d["values"][1].update(shape=[-2, 4, 4]),
    "absurd size": lambda d: d["values"][1].update(shape=[2**40, 4, 4]),
    "bits a string": lambda d: d["values"][1].update(bits="8"),
    "bits absurd": lambda d: d["values"][2].update(bits=10**6),
    "lo above hi": lambda d: d["values"][2].update(lo=5, hi=-5),
    "lo a float": lambda d: d["values"][2].update(lo=0.5),
    "dtype unknown": lambda d: d["values"][2].update(dtype="complex"),
    "scale NaN-like": lambda d: d["values"][2].update(scale="nan"),
    "attrs a list": lambda d: _op(d, "conv").update(attrs=[1, 2]),
    "stride 0": lambda d: _op(d, "conv")["attrs"].update(stride=0),
    "stride a string": lambda d: _op(d, "sum")["attrs"].update(stride="2"),
    "groups 0": lambda d: _op(d, "conv")["attrs"].update(groups=0),
    "negative padding": lambda d: _op(d, "conv")["attrs"].update(padding=[-1, 0, 0, 0]),
    "padding of 3": lambda d: _op(d, "sum")["attrs"].update(padding=[0, 0, 0]),
    "window larger than its input": _window_sum_of_any_size,
    "sum mode unknown": lambda d: _op(d, "sum")["attrs"].update(mode="diagonal"),
    "output shape that does not follow": lambda d: _value(d, _op(d, "conv")["output"]).update(
        shape=[3, 9, 9]
    ),
    "input read before it is computed": lambda d: d["ops"].reverse(),
    "input name unknown": lambda d: _op(d, "conv").update(inputs=["nowhere", "w_1"]),
    "inputs an integer": lambda d: _op(d, "conv").update(inputs=7),
    "op a list": lambda d: _op(d, "conv").update(op=["conv"]),
    "missing ops": lambda d: d.pop("ops"),
    "missing attrs": lambda d: _op(d, "conv").pop("attrs"),
    "output not computed": lambda d: d.update(output="nowhere"),
    "clip bound a string": lambda d: _op(d, "clip")["attrs"].update(lo="-8"),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_hostile_program_json_is_one_program_error(tmp_path: Path, damage) -> None:  # noqa: ANN001
    _damaged(tmp_path, damage)
    with pytest.raises(ProgramError) as caught:
        IntegerProgram.load(tmp_path)
    assert "\n" not in str(caught.value)


def test_deep_nesting_and_non_json_are_one_program_error(tmp_path: Path) -> None:
    _program(tmp_path)
    for text in ("[" * 200_000 + "]" * 200_000, '{"version": 1, "values": ' + "[" * 100_000):
        (tmp_path / "program.json").write_text(text)
        with pytest.raises(ProgramError):
            IntegerProgram.load(tmp_path)
    (tmp_path / "program.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ProgramError, match="cannot read"):
        IntegerProgram.load(tmp_path)


@pytest.mark.parametrize(
    "header",
    [
        b'{"w_1": {"dtype": "I64", "shape": [3, 2, 1, 1], "data_offsets": [0, 10**20]}}',
        b'{"w_1": {"dtype": "I64", "shape": "x", "data_offsets": [0, 48]}}',
        b'{"w_1": [1, 2]}',
        b"[" * 100_000,
    ],
)
def test_hostile_constants_are_one_program_error(tmp_path: Path, header: bytes) -> None:
    _program(tmp_path)
    header += b" " * (-len(header) % 8)
    (tmp_path / "program.safetensors").write_bytes(
        len(header).to_bytes(8, "little") + header + bytes(48)
    )
    with pytest.raises(ProgramError):
        IntegerProgram.load(tmp_path)


def test_a_run_is_bounded_before_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Consistent shapes but absurd work: refused by the declared shapes (one line naming the
    op, the size and the bound), before anything is allocated or looped over."""
    program = _program(tmp_path)
    total, held, costliest, _ = program.work(1)
    assert total > 0 and held > 0 and costliest
    monkeypatch.setattr(ir, "MAX_RUN_WORK", total * 3 - 1)
    program.run(np.zeros((2, 2, 4, 4), np.float32))
    with pytest.raises(ProgramError, match=r"operations, over the bound of .*the costliest: \w+"):
        program.run(np.zeros((3, 2, 4, 4), np.float32))
    monkeypatch.setattr(ir, "MAX_RUN_WORK", 10**12)
    monkeypatch.setattr(ir, "MAX_RUN_BYTES", held * 2 - 1)
    with pytest.raises(ProgramError, match="GiB, over the bound"):
        program.run(np.zeros((3, 2, 4, 4), np.float32))


def test_a_huge_window_sum_that_fits_its_shapes_is_refused_by_the_bound(tmp_path: Path) -> None:
    """A window of 10^5 x 10^5 over a 10^5 x 10^5 input: declared consistently, refused at run
    time by its size, long before 10^10 loop turns."""

    def huge(data: dict[str, Any]) -> None:
        _value(data, "input")["shape"] = data["input"]["shape"] = [2, 100_000, 100_000]
        for op in ("clip", "round"):
            _value(data, _op(data, op)["output"])["shape"] = [2, 100_000, 100_000]
        _op(data, "sum")["attrs"].update(kernel=100_000, stride=100_000, terms=2 * 10**10)
        _value(data, _op(data, "sum")["output"])["shape"] = [2, 1, 1]
        _value(data, _op(data, "conv")["output"])["shape"] = [3, 1, 1]
        _value(data, _op(data, "flatten")["output"])["shape"] = [3]

    _damaged(tmp_path, huge)
    program = IntegerProgram.load(tmp_path)
    with pytest.raises(
        ProgramError, match=r"GiB, over the bound of 16 GiB \(the costliest op: \w+ in layer"
    ):
        program.check_work(1)


def _runner(tmp_path: Path) -> tuple[Path, Path]:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _program(bundle)
    shutil.copy(ir.__file__, bundle / "run_program.py")
    return bundle, tmp_path / "x.npy"


def _run(bundle: Path, images: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(bundle / "run_program.py"), str(bundle), "--input", str(images)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_run_program_py_runs_a_good_input(tmp_path: Path) -> None:
    bundle, images = _runner(tmp_path)
    np.save(images, np.ones((1, 2, 4, 4), np.float32))
    result = _run(bundle, images)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)[0]) == 12


BAD_INPUTS: dict[str, Callable[[Path], Any]] = {
    "empty file": lambda p: p.write_bytes(b""),
    "not npy": lambda p: p.write_text("1,2,3\n"),
    "truncated npy": lambda p: (
        np.save(p, np.ones((1, 2, 4, 4))),
        p.write_bytes(p.read_bytes()[:90]),
    ),
    "strings": lambda p: np.save(p, np.full((1, 2, 4, 4), "7")),
    "complex": lambda p: np.save(p, np.ones((1, 2, 4, 4), np.complex64)),
    "wrong shape": lambda p: np.save(p, np.ones((1, 3, 4, 4), np.float32)),
    "scalar": lambda p: np.save(p, np.float32(1.0)),
    "no samples": lambda p: np.save(p, np.ones((0, 2, 4, 4), np.float32)),
    "NaN": lambda p: np.save(p, np.full((1, 2, 4, 4), np.nan, np.float32)),
    "float64 beyond float32": lambda p: np.save(p, np.full((1, 2, 4, 4), 1e300)),
    "an npz": lambda p: np.savez(p.with_suffix(""), a=np.ones(3)),
    "a folder": lambda p: p.mkdir(),
    "missing": lambda p: None,
}


@pytest.mark.parametrize("make", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_run_program_py_refuses_bad_inputs_in_one_line(tmp_path: Path, make) -> None:  # noqa: ANN001
    bundle, images = _runner(tmp_path)
    make(images)
    result = _run(bundle, images)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_run_program_py_refuses_a_hostile_bundle_in_one_line(tmp_path: Path) -> None:
    bundle, images = _runner(tmp_path)
    np.save(images, np.ones((1, 2, 4, 4), np.float32))
    data = json.loads((bundle / "program.json").read_text())
    _window_sum_of_any_size(data)
    (bundle / "program.json").write_text(json.dumps(data))
    result = _run(bundle, images)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "window is larger than" in result.stderr
