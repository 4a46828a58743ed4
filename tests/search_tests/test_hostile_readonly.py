"""Read-only media: reading a finished run (`pikenas front`, `dashboard --out elsewhere`,
`export --out elsewhere`, a SQLite study) needs no write access to its folder.

The folder is made read-only for real: as root (who ignores permissions) by a read-only bind
mount, otherwise by taking the write permission away; where neither is possible the tests skip.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from pikenas.results.storage import open_study
from pikenas.search.cli import main
from tests.results_tests._studies import MIXED, make_run


def _read_only(source: Path, target: Path) -> bool:
    """Show ``source`` read-only at ``target``; False when this machine cannot."""
    if os.geteuid() != 0:
        shutil.copytree(source, target)
        for path in [target, *target.rglob("*")]:
            path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
        return True
    target.mkdir()
    if shutil.which("mount") is None:
        return False
    bind = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
    if bind.returncode != 0:
        return False
    remount = subprocess.run(
        ["mount", "-o", "remount,ro,bind", str(target)], capture_output=True
    )
    if remount.returncode != 0:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
        return False
    return True


def _release(target: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
    else:
        for path in [target, *target.rglob("*")]:
            path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)


@pytest.fixture()
def media(tmp_path: Path) -> Iterator[Path]:
    """A folder ``media`` whose ``source`` sibling is shown read-only at ``media``."""
    source = tmp_path / "source"
    source.mkdir()
    target = tmp_path / "media"
    yield target
    if target.exists():
        _release(target)


def _mount(source: Path, target: Path) -> None:
    if not _read_only(source, target):
        pytest.skip("cannot make a read-only folder here (root without mount rights)")
    with pytest.raises(OSError):
        (target / "probe").write_text("x")  # the folder is read-only for real


def test_a_run_on_read_only_media_is_read(
    media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_run(media.with_name("source") / "run", MIXED)
    _mount(media.with_name("source"), media)
    run = media / "run"
    before = sorted(p.name for p in run.iterdir())
    assert main(["front", str(run)]) == 0
    assert main(["front", str(run), "--json"]) == 0
    assert main(["dashboard", str(run), "--out", str(tmp_path / "page.html"),
                 "--no-breakdowns"]) == 0
    assert (tmp_path / "page.html").is_file()
    assert main(["export", str(run), "--trial", "0", "--out", str(tmp_path / "bundles")]) == 0
    assert (tmp_path / "bundles" / "trial-0").is_dir()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not writable" not in err, err
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_sqlite_study_on_read_only_media_is_read(media: Path) -> None:
    source = media.with_name("source")
    study = optuna.create_study(storage=f"sqlite:///{source}/study.db", study_name="s")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    del study
    _mount(source, media)
    assert len(open_study(f"sqlite:///{media}/study.db").trials) == 2
