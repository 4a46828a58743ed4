"""Storage targets and the journal file under hostile conditions: torn and corrupted lines, a
full disk during an append, a writer killed while holding the write lock, malformed URLs,
mistyped SQLite paths; one password masking for every message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

import pikenas.results._journal_file as journal_file
from pikenas.results.storage import display_name, open_storage, open_study, parse_storage
from pikenas.space._text import printable, redact
from pikenas.space.errors import DiskError, RunDirError

ROOT = Path(__file__).resolve().parents[2]


def _study_with_trials(path: Path, n: int = 3) -> None:
    study = optuna.create_study(storage=open_storage(path, create=True), study_name="s")
    for value in range(n):
        study.add_trial(optuna.trial.create_trial(value=float(value)))


def test_a_torn_tail_is_cut_before_the_rerun_appends(tmp_path: Path) -> None:
    path = tmp_path / "study.log"
    _study_with_trials(path)
    os.truncate(path, path.stat().st_size - 5)  # a writer killed mid-append, or a full disk
    assert len(open_study(path).trials) == 2  # readers skip the torn line
    study = optuna.load_study(study_name="s", storage=open_storage(path))  # no create: no cut
    study.add_trial(optuna.trial.create_trial(value=7.0))  # the append cuts it first
    reread = open_study(path)
    assert [t.value for t in reread.trials] == [0.0, 1.0, 7.0]
    assert path.read_bytes().endswith(b"\n")
    for line in path.read_bytes().splitlines():
        json.loads(line)  # every line is a whole record


@pytest.mark.parametrize(
    "garbage",
    [b"{not json\n", b"\xff\xfe\x00garbage\n", b"[1, 2]\n", b'{"op_code": 99999}\n', b"{}\n"],
)
def test_a_corrupt_middle_line_names_the_file_line_and_recovery(
    tmp_path: Path, garbage: bytes
) -> None:
    path = tmp_path / "study.log"
    _study_with_trials(path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:2], garbage, *lines[2:]]))
    with pytest.raises(RunDirError) as caught:
        open_study(path)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{path}: line 3 " in message and f"head -n 2 {path}" in message


def test_the_recovery_command_gives_a_readable_journal(tmp_path: Path) -> None:
    path = tmp_path / "study.log"
    _study_with_trials(path, 4)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join([*lines[:4], b"garbage\n", *lines[4:]]))
    with pytest.raises(RunDirError) as caught:
        open_study(path)
    command = str(caught.value).split("keep the records before it: ")[1].split(" (the")[0]
    subprocess.run(command, shell=True, check=True)
    assert len(open_study(path).trials) >= 1


def test_a_full_disk_during_an_append_leaves_no_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "study.log"
    _study_with_trials(path)
    before = path.read_bytes()
    storage = open_storage(path)

    def full(_: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(journal_file.os, "fsync", full)
    with pytest.raises(DiskError, match="ENOSPC"):
        storage.set_study_user_attr(0, "note", "x" * 10_000)
    monkeypatch.undo()
    assert path.read_bytes() == before
    open_study(path).set_user_attr("after", 1)  # the next append is whole
    assert open_study(path).user_attrs == {"after": 1}


def test_a_writer_killed_holding_the_lock_does_not_stall_the_next(tmp_path: Path) -> None:
    path = tmp_path / "study.log"
    _study_with_trials(path)
    code = (
        "import sys, time; from pikenas.results._journal_file import JournalFile; "
        "backend = JournalFile(sys.argv[1]); backend._lock.acquire(); print('held', flush=True); "
        "time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    open_study(path).set_user_attr("after", 1)
    assert time.monotonic() - started < 5  # Optuna's symlink lock would wait 30 s


def test_a_mistyped_sqlite_path_is_not_created_when_reading(tmp_path: Path) -> None:
    typo = tmp_path / "stduy.db"
    with pytest.raises(RunDirError, match="no SQLite database"):
        open_study(f"sqlite:///{typo}")
    assert not typo.exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite://", "needs a database file"),
        ("sqlite:///", "needs a database file"),
        ("sqlite:///:memory:", "needs a database file"),
        ("postgresql://u:hunter2@host:notaport/db", "malformed"),
        ("postgresql://u:hunter2@/db", "no host"),
        ("postgresql://u:hunter2@host:5432", "no database"),
        ("oracle://u:hunter2@host/db", "unknown storage scheme"),
    ],
)
def test_malformed_urls_are_one_line_without_the_password(url: str, expected: str) -> None:
    with pytest.raises(RunDirError, match=expected) as caught:
        parse_storage(url)
    assert "hunter2" not in str(caught.value)


def test_storage_files_in_missing_or_blocked_places(tmp_path: Path) -> None:
    from pikenas.results.storage import check_storage_file

    missing = parse_storage(tmp_path / "missing" / "deeper" / "study.log")
    check_storage_file(missing)  # a new study's folder may be created ...
    assert not (tmp_path / "missing").exists()  # ... but only when asked to
    check_storage_file(missing, create_folder=True)
    assert (tmp_path / "missing" / "deeper").is_dir()
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    with pytest.raises(RunDirError, match="is a file, not a folder"):
        check_storage_file(parse_storage(blocker / "sub" / "study.log"))
    folder_log = tmp_path / "folder.log"
    folder_log.mkdir()
    with pytest.raises(RunDirError, match="not a regular file"):
        check_storage_file(parse_storage(folder_log))


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://user:s3cr3t@db.example:5432/pikenas",
        "postgresql+psycopg2://user:s3cr3t@db/x",
        "cannot open mysql://root:s3cr3t@10.0.0.1/db: refused",
        "postgresql://user:s3@cr3t@db/x",  # an '@' inside the password
        "postgresql://db/x?user=u&password=s3cr3t",
    ],
)
def test_one_masking_hides_every_password(text: str) -> None:
    for shown in (redact(text), display_name(text), printable(text)):
        assert "s3cr3t" not in shown and "cr3t" not in shown and "***" in shown


def test_printable_escapes_terminal_controls() -> None:
    assert printable("a\x1b[31mred\x00\r\u202e") == "a\\x1b[31mred\\x00\\r\\u202e"
    assert printable("line\n\tindented") == "line\n\tindented"


def test_a_relative_final_dir_follows_a_moved_run(tmp_path: Path) -> None:
    from pikenas.results.trials import load
    from tests.results_tests._studies import Point, make_run

    run = tmp_path / "run"
    make_run(run, [Point(0.9, 900.0, attrs={"final_accuracy": 0.9, "final_dir": "final/trial-0"})])
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    run.rename(moved)
    assert load(moved)["final_dir"].tolist() == [str(moved / "final" / "trial-0")]
