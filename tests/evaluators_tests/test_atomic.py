"""The one atomic write: never through a link or over a device, the user's umask, stale
temporary files of killed writers removed, OS errors as one line (bad path: exit 2, full disk:
exit 1 naming ENOSPC)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pikenas.evaluators._atomic import LEDGER_NAME, atomic_directory, atomic_write
from pikenas.space.errors import DiskError, RunDirError


def _listing(folder: Path) -> list[str]:
    """The folder's entries without pikenas's ledger of what it wrote."""
    return sorted(p.name for p in folder.iterdir() if p.name != LEDGER_NAME)

def test_writes_with_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = atomic_write(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "bundle") as folder:
            (folder / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "bundle").stat().st_mode) == 0o750


def test_refuses_a_symlink_and_keeps_it(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "out.html"
    link.symlink_to(victim)
    with pytest.raises(RunDirError, match="symbolic link"):
        atomic_write(link, "new")
    assert link.is_symlink() and victim.read_text() == "precious"
    with pytest.raises(RunDirError, match="symbolic link"):
        with atomic_directory(link):
            pass


def test_refuses_a_folder_and_a_device(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="is a folder"):
        atomic_write(tmp_path, "x")
    with pytest.raises(RunDirError, match="device or special file"):
        atomic_write("/dev/null", "x")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(RunDirError, match="special file"):
        atomic_write(fifo, "x")


def test_bad_paths_are_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match="ENOTDIR.*a part of the path is a file"):
        atomic_write(blocker / "sub" / "x.txt", "x")
    with pytest.raises(RunDirError, match="ENAMETOOLONG.*shorter path"):
        atomic_write(tmp_path / ("n" * 300), "x")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(RunDirError, match="EACCES"):
            atomic_write(locked / "x.txt", "x")


def test_a_full_disk_names_enospc_and_leaves_nothing(tmp_path: Path) -> None:
    def fill(_: Path) -> None:
        raise OSError(28, "No space left on device")

    target = tmp_path / "front.csv"
    atomic_write(target, "old")
    with pytest.raises(DiskError, match=r"No space left on device \(ENOSPC\); free some space"):
        atomic_write(target, fill)
    assert target.read_text() == "old"
    assert _listing(tmp_path) == ["front.csv"]


def test_stale_temporary_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "dashboard.html"
    code = (
        "import os, sys; from pikenas.evaluators._atomic import atomic_write; "
        "atomic_write(sys.argv[1], lambda p: os.kill(os.getpid(), 9))"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    killed = subprocess.run([sys.executable, "-c", code, str(target)], env=env, check=False)
    assert killed.returncode == -9
    leftovers = _listing(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp")
    live = tmp_path / f".dashboard.html.{os.getpid()}.0123abcd.tmp"  # a writer still running
    live.write_text("")
    atomic_write(target, "page")
    assert _listing(tmp_path) == [live.name, "dashboard.html"]


def test_a_bundle_killed_between_its_renames_is_put_back(tmp_path: Path) -> None:
    target = tmp_path / "trial-3"
    old = tmp_path / ".trial-3.999999999.0123abcd.old"  # pid 999999999 does not exist
    with atomic_directory(target) as folder:
        (folder / "arch.json").write_text("{}")
    target.rename(old)  # a writer killed between its two renames left it aside
    with atomic_directory(tmp_path / "trial-4") as folder:
        (folder / "arch.json").write_text("{}")
    assert not (tmp_path / "trial-3").exists()  # another target's leftovers are not touched
    with atomic_directory(target) as folder:
        raise_here = False
        assert not raise_here
        assert (target / "arch.json").is_file()  # restored before the new one is built
        (folder / "arch.json").write_text("{}")
    assert not old.exists()


def test_a_failing_directory_write_leaves_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "trial-1"
    with atomic_directory(target) as folder:
        (folder / "arch.json").write_text("old")
    with pytest.raises(ValueError):
        with atomic_directory(target) as folder:
            (folder / "arch.json").write_text("new")
            raise ValueError("check failed")
    assert (target / "arch.json").read_text() == "old"
    assert _listing(tmp_path) == ["trial-1"]


def test_a_file_pikenas_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    users = tmp_path / "front.csv"
    users.write_text("the user's table")
    with pytest.raises(RunDirError, match="not a file pikenas wrote.*move it away"):
        atomic_write(users, "ours")
    assert users.read_text() == "the user's table"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.csv"]  # no ledger, no temp


def test_its_own_file_is_replaced_but_not_once_someone_changed_it(tmp_path: Path) -> None:
    target = tmp_path / "dashboard.html"
    atomic_write(target, "one")
    atomic_write(target, "two")
    assert target.read_text() == "two"
    with target.open("a") as handle:
        handle.write(" and a user's edit")
    with pytest.raises(RunDirError, match="or was changed since"):
        atomic_write(target, "three")
    assert target.read_text() == "two and a user's edit"


def test_a_file_appended_by_others_such_as_the_journal_is_refused(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    journal.write_text('{"op_code": 0}\n')
    with pytest.raises(RunDirError, match="study.log exists and is not a file pikenas wrote"):
        atomic_write(journal, "<html>")
    assert journal.read_text() == '{"op_code": 0}\n'


def test_a_folder_pikenas_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "trial-3"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a folder pikenas wrote"):
        with atomic_directory(folder) as temp:
            (temp / "arch.json").write_text("{}")
    assert _listing(tmp_path) == ["trial-3"]
    assert (folder / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("moment", ["before the rename", "after the rename"])
@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_writer_killed_at_any_moment_leaves_its_output_replaceable(
    tmp_path: Path, moment: str, kind: str
) -> None:
    """SIGKILL right before or right after the rename of a second write: the next write of the
    same target succeeds (the ledger lists the identity the target has, whichever it is)."""
    target = tmp_path / ("front.csv" if kind == "file" else "trial-1")
    if kind == "file":
        write = "atomic_write(target, 'second')"
    else:
        write = (
            "with atomic_directory(target) as temp:\n"
            "    (temp / 'a.txt').write_text('second')"
        )
    after = moment == "after the rename"
    code = f"""
import os, sys
from pathlib import Path
import pikenas.evaluators._atomic as atomic
from pikenas.evaluators._atomic import atomic_directory, atomic_write
target = Path(sys.argv[1])
if {kind == "file"}:
    atomic_write(target, 'first')
else:
    with atomic_directory(target) as temp:
        (temp / 'a.txt').write_text('first')
real = os.replace
def replace(src, dst):
    if Path(dst) == target:
        if {after}:
            real(src, dst)
        os.kill(os.getpid(), 9)
    return real(src, dst)
atomic.os.replace = replace
{write}
"""
    killed = subprocess.run([sys.executable, "-c", code, str(target)], check=False)
    assert killed.returncode == -9
    if kind == "file":
        assert target.read_text() == ("second" if after else "first")
        atomic_write(target, "third")
        assert target.read_text() == "third"
    else:
        with atomic_directory(target) as temp:
            (temp / "a.txt").write_text("third")
        assert (target / "a.txt").read_text() == "third"
