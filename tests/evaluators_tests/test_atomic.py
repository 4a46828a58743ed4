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

from pikenas.evaluators._atomic import atomic_directory, atomic_write
from pikenas.space.errors import DiskError, RunDirError


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
    target.write_text("old")
    with pytest.raises(DiskError, match=r"No space left on device \(ENOSPC\); free some space"):
        atomic_write(target, fill)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.csv"]


def test_stale_temporary_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "dashboard.html"
    code = (
        "import os, sys; from evaluators._atomic import atomic_write; "
        "atomic_write(sys.argv[1], lambda p: os.kill(os.getpid(), 9))"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    killed = subprocess.run([sys.executable, "-c", code, str(target)], env=env, check=False)
    assert killed.returncode == -9
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].endswith(".tmp")
    live = tmp_path / f".dashboard.html.{os.getpid()}.0123abcd.tmp"  # a writer still running
    live.write_text("")
    atomic_write(target, "page")
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "dashboard.html"]


def test_a_bundle_killed_between_its_renames_is_put_back(tmp_path: Path) -> None:
    target = tmp_path / "trial-3"
    old = tmp_path / ".trial-3.999999999.0123abcd.old"  # pid 999999999 does not exist
    old.mkdir()
    (old / "arch.json").write_text("{}")
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
    target.mkdir()
    (target / "arch.json").write_text("old")
    with pytest.raises(ValueError):
        with atomic_directory(target) as folder:
            (folder / "arch.json").write_text("new")
            raise ValueError("check failed")
    assert (target / "arch.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial-1"]
