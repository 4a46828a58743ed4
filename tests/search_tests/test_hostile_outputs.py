"""Data loss: a command replaces only what pikenas wrote. `pikenas dashboard --out` onto the
run's own study.log or a user's file, and `pikenas search --out DIR` where DIR holds a user's
file of a run output's name, exit 2 with one line before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from pikenas.search.cli import main
from tests.results_tests._studies import MIXED, make_run
from tests.search_tests.fakes import FAKE


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


def test_dashboard_out_onto_the_studys_journal_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    make_run(run, MIXED)
    before = _snapshot(run)
    assert main(["dashboard", str(run), "--out", str(run / "study.log")]) == 2
    assert "study.log" in _one_line(capsys)
    assert _snapshot(run) == before  # the study is intact
    assert main(["front", str(run)]) == 0


def test_dashboard_out_onto_a_users_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    make_run(run, MIXED)
    mine = tmp_path / "report.html"
    mine.write_text("<p>my notes</p>")
    assert main(["dashboard", str(run), "--out", str(mine)]) == 2
    assert "report.html" in _one_line(capsys)
    assert mine.read_text() == "<p>my notes</p>"
    # a page pikenas wrote is replaced on the next run
    page = tmp_path / "page.html"
    assert main(["dashboard", str(run), "--out", str(page), "--no-breakdowns"]) == 0
    assert main(["dashboard", str(run), "--out", str(page), "--no-breakdowns"]) == 0


@pytest.mark.parametrize(
    "name", ["config.yaml", "front.csv", "dashboard.html", "exports/notes.txt", "exports"]
)
def test_search_out_holding_a_users_output_name_writes_nothing(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text("the user's own\n")
    before = _snapshot(out)
    args = ["search", "--trials", "4", "--out", str(out), "--evaluator", FAKE, "--workers", "1"]
    assert main([*args, "--no-export", "--full-train-top", "0"]) == 2
    assert name.split("/")[0] in _one_line(capsys)
    assert _snapshot(out) == before  # no study.log, no config.yaml: nothing written
    assert not (out / "study.log").exists()


def test_search_reruns_over_its_own_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["search", "--trials", "4", "--out", str(out), "--evaluator", FAKE, "--workers", "1"]
    args += ["--no-export", "--full-train-top", "0"]
    assert main(args) == 0
    assert (out / "front.csv").is_file() and (out / "config.yaml").is_file()
    assert main([*args[:2], "5", *args[3:]]) == 0  # resumed: its own outputs are replaced
    capsys.readouterr()
    (out / "front.csv").write_text("edited by the user\n")
    assert main([*args[:2], "6", *args[3:]]) == 2
    assert "front.csv" in _one_line(capsys)
    assert (out / "front.csv").read_text() == "edited by the user\n"
