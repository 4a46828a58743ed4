"""Output injection in the model card (a bundle's README.md): HTML, Markdown, terminal control
bytes and line breaks in the strings a user or a study chose (architecture name, study name,
cost table name and unit, data set, sampler, final_dir, a `pikenas train` folder name) are
escaped: they render as the text they are and cannot add lines, table cells, links or tags."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from pikenas.results.export._model_card import model_card
from pikenas.results.record import FinalResult, TrialRecord
from pikenas.space.arch import ArchConfig
from tests.results_tests._studies import tiny_arch

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "\x1b[2J\x1b]0;owned\x07",
    "line\n# Forged heading\n| forged | row |",
    "| col | col |",
    "[click](javascript:alert(1))",
    "`code` ``` fence",
    "a\rb\u2028c",
]


def _card(text: str, folder: str = "trial-3") -> str:
    arch = tiny_arch(name=f"net {text}")
    # model_construct: the record as a study could hold it (hostile strings are valid strings)
    record = TrialRecord.model_construct(
        arch=arch.to_json(), baseline=f"base {text}", status="complete"
    )
    final = FinalResult.model_construct(
        final_accuracy=0.91, final_val_accuracy=0.9, final_wall_s=1.0, final_dir=f"final/{text}"
    )
    info = {key: f"{key} {text}" for key in (
        "study", "dataset", "sampler", "cost_table", "cost_unit", "pikenas_version")}
    cost = {"ace_v2": 1000.0, "ace_v1": 10.0, "macs": 5.0, "params": 7.0,
            "elementwise_share": 0.5, "cost_unit": f"unit {text}", "cost_table": f"table {text}"}
    verified = SimpleNamespace(widest={"x": (9, 16)}, images=4, compared_elements=100, values=3,
                               mismatches=0, stages=2, float_path_mismatches=0,
                               max_float_error_ratio=0.1, surrogate_elements=50,
                               surrogate_mismatches=0)
    return model_card(arch=arch, number=3, record=record, accuracy=0.9, final=final, info=info,
                      cost=cost, has_weights=True, onnx_check=SimpleNamespace(exact=True),
                      verified=verified, folder_name=folder)


def _unescaped(card: str, character: str) -> int:
    """How often ``character`` occurs in ``card`` not escaped by a backslash, outside code."""
    prose = re.sub(r"```.*?```", "", card, flags=re.DOTALL)  # fenced blocks (ours)
    prose = re.sub(r"(`+).*?\1", "", prose)  # code spans
    return len(re.findall(r"(?<!\\)" + re.escape(character), prose))


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_are_escaped_in_the_model_card(text: str) -> None:
    reference = _card("plain")
    card = _card(text)
    assert "\x1b" not in card and "\x07" not in card and "\r" not in card
    assert "\u2028" not in card
    assert len(card.splitlines()) == len(reference.splitlines())  # no forged line
    for character in "<>[]|":
        assert _unescaped(card, character) == _unescaped(reference, character), character
    assert ArchConfig.from_json(tiny_arch(name=f"net {text}").to_json()).name == f"net {text}"


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_folder_name_cannot_break_the_code(text: str) -> None:
    reference = _card("plain", folder="my-model")
    card = _card("plain", folder=f"my-model {text}")
    assert "\x1b" not in card and "\r" not in card
    assert len(card.splitlines()) == len(reference.splitlines())
    fences = [line for line in card.splitlines() if line.startswith("```")]
    assert fences == [line for line in reference.splitlines() if line.startswith("```")]
    loads = [line for line in card.splitlines() if line.startswith("arch, model = load_bundle(")]
    assert len(loads) == 1 and loads[0].count('"') - loads[0].count('\\"') == 2
