"""The command line against hostile input and injected faults: every case ends with exit 2 (bad
input) or 1 (a runtime failure) and ONE line on stderr, no traceback, no password, nothing
written where it must not be; Ctrl-C ends with 130 and pikenas's own line."""

from __future__ import annotations

import errno
import http.client
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest

import pikenas.evaluators._atomic as atomic
from pikenas.results.record import update_study_record
from pikenas.search.cli import main
from tests.results_tests._studies import MIXED, Point, make_run
from tests.search_tests.conftest import PIKENAS, fake_env

PASSWORD = "hunter2secret"
URL = f"postgresql://pikenas:{PASSWORD}@127.0.0.1:1/nowhere"


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert PASSWORD not in err
    return lines[0]


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    make_run(folder, MIXED)
    return folder


@pytest.mark.parametrize(
    "argv",
    [
        ["front", URL],
        ["dashboard", URL, "--out", "page.html"],
        ["export", URL, "--pareto", "--out", "bundles"],
        ["search", "--storage", URL, "--out", "run"],
        ["worker", "--storage", URL],
        ["front", "postgresql://pikenas:hunter2secret@host:notaport/db"],
        ["worker", "--storage", "mysql://root:hunter2secret@/db"],
    ],
)
def test_no_message_shows_a_password(
    argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert "***" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_corrupt_journal_is_one_line_naming_the_line(
    run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = run / "study.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:5], b'{"op_code": 5, "trial_id"\n', *lines[5:]]))
    for command in (["front", str(run)], ["dashboard", str(run)], ["export", str(run), "--pareto"]):
        assert main(command) == 2
        assert f"{journal}: line 6 " in _one_error_line(capsys)


def test_front_and_dashboard_refuse_a_study_that_is_not_pikenas(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pikenas.results.storage import open_storage

    storage = open_storage(tmp_path / "study.log", create=True)
    study = optuna.create_study(storage=storage, study_name="other")  # one objective
    study.add_trial(optuna.trial.create_trial(value=1.0))
    for command in ("front", "dashboard"):
        assert main([command, str(tmp_path)]) == 2
        assert "is not a pikenas study" in _one_error_line(capsys)
    assert not (tmp_path / "dashboard.html").exists()


def test_non_finite_values_never_reach_the_json_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    study = make_run(
        run, [Point(0.5, 100.0), Point(0.9, 900.0, channels=16, attrs={"ace_v1": math.inf})]
    )
    study.add_trial(optuna.trial.create_trial(values=[math.inf, 5.0]))
    update_study_record(study, kendall_tau=None)
    study.set_user_attr("final_results", {"1": {"final_dir": 5}, "x": "garbage"})  # hostile
    assert main(["front", str(run), "--json"]) == 0
    out = capsys.readouterr().out
    records = json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert [r["number"] for r in records] == [0, 1]
    assert records[1]["ace_v1"] is None
    assert main(["dashboard", str(run)]) == 0


def test_output_paths_that_are_not_files(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "page.html"
    link.symlink_to(victim)
    cases = {
        "/dev/null": "device or special file",
        str(link): "symbolic link",
        str(tmp_path): "is a folder",
        str(tmp_path / ("x" * 300)): "ENAMETOOLONG",
        str(victim / "page.html"): "ENOTDIR",
    }
    for out, message in cases.items():
        assert main(["dashboard", str(run), "--out", out, "--no-breakdowns"]) == 2
        assert message in _one_error_line(capsys)
    assert victim.read_text() == "keep me" and link.is_symlink()
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_a_full_disk_is_exit_1_naming_enospc(
    run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(descriptor: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", full)
    assert main(["dashboard", str(run), "--no-breakdowns"]) == 1
    assert "(ENOSPC)" in _one_error_line(capsys)
    assert not (run / "dashboard.html").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_an_unexpected_error_is_one_line_exit_1_and_debug_shows_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pikenas.evaluators.cost as ace

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ace, "count_ace", broken)
    assert main(["ace", "tiny-w8a8"]) == 1
    assert "internal error: ZeroDivisionError: a bug" in _one_error_line(capsys)
    monkeypatch.setenv("PIKENAS_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["ace", "tiny-w8a8"])


def test_terminal_escapes_of_user_strings_are_not_printed_raw(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["zoo", "tiny-w8a8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    data["name"] = "evil\x1b[31mred\x00\u202e"
    arch = tmp_path / "evil.json"
    arch.write_text(json.dumps(data))
    assert main(["ace", str(arch)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x00" not in out and "\u202e" not in out
    assert "evil\\x1b[31mred\\x00\\u202e" in out
    name = tmp_path / "\x1b[2Jx.json"
    assert main(["ace", str(name)]) == 2
    assert "\x1b" not in _one_error_line(capsys)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"name": "a", "name": "b"}', "appears twice"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b'{"resolution": NaN}', "NaN is not a number"),
        (b"\xff\xfe{}", "UTF-8"),
    ],
)
def test_hostile_architecture_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: bytes, message: str
) -> None:
    path = tmp_path / "arch.json"
    path.write_bytes(text)
    assert main(["ace", str(path)]) == 2
    assert message in _one_error_line(capsys)


def test_a_refused_train_leaves_no_folder_that_blocks_the_corrected_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "train"
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["train", "tiny-w8a8", "--out", str(out), "--epochs", "1"]
    assert main([*base, "--dataset", "cifar10", "--data-dir", str(empty)]) == 2
    _one_error_line(capsys)
    assert not out.exists()
    assert main([*base, "--lr", "1e30"]) == 1  # diverges: a runtime failure
    assert "diverged" in _one_error_line(capsys)
    assert not out.exists()
    assert main(base) == 0


def test_relative_storage_paths_work_from_the_run_folder(tmp_path: Path) -> None:
    command = [PIKENAS, "search", "--out", "run", "--storage", "rel/study.log", "--trials", "3"]
    command += ["--evaluator", "tests.search_tests.fakes:fake", "--workers", "1"]
    command += ["--full-train-top", "0", "--no-export"]
    (tmp_path / "rel").mkdir()
    done = subprocess.run(command, cwd=tmp_path, env=fake_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "rel" / "study.log").is_file() and not (tmp_path / "run" / "rel").exists()


@pytest.mark.slow
def test_ctrl_c_of_a_live_dashboard_is_130_with_one_line(run: Path) -> None:
    process = subprocess.Popen(
        [PIKENAS, "dashboard", str(run), "--serve", "--port", "0", "--no-breakdowns"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "serving the live dashboard on http://127.0.0.1:" in line
    port = int(line.split(":")[-1].split("/")[0])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/data.json", headers={"Host": "evil.example:80"})
    assert connection.getresponse().status == 403  # DNS rebinding
    connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/data.json")
    assert connection.getresponse().status == 200
    connection.close()
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err.strip().splitlines() == [
        "pikenas: interrupted; what was finished is kept: rerun the same command to continue"
    ]


def test_a_torn_journal_then_the_documented_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["search", "--out", str(out), "--evaluator", "tests.search_tests.fakes:fake"]
    args += ["--workers", "1", "--full-train-top", "0", "--no-export"]
    assert main([*args, "--trials", "5"]) == 0
    journal = out / "study.log"
    os.truncate(journal, journal.stat().st_size - 5)  # `truncate -s -5 study.log`
    assert main([*args, "--trials", "8"]) == 0
    for line in journal.read_bytes().splitlines():
        json.loads(line)  # no broken line in the middle
    capsys.readouterr()
    assert main(["front", str(out), "--json"]) == 0
    from pikenas.results.storage import open_study

    states = [t.state.name for t in open_study(out).trials]
    assert states.count("COMPLETE") == 8 and "RUNNING" not in states
