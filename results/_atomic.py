"""Atomic writes: a reader never sees a half-written file or bundle folder.

Files go through :func:`evaluators._checkpoint.atomic_write` (the one definition: temporary
file, ``fsync``, ``os.replace``, ``fsync`` of the folder); :func:`atomic_directory` does the
same for a whole folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evaluators._checkpoint import atomic_write, fsync_folder

__all__ = ["atomic_write", "atomic_directory"]


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temp folder next to ``path``; on success it replaces ``path``.

    On an exception the temp folder is removed and an existing ``path`` is left untouched.
    An existing ``path`` is swapped out by two renames, then deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield temp
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    for entry in temp.iterdir():  # the files' data must be durable before the folder appears
        if entry.is_file():
            with entry.open("rb") as handle:
                os.fsync(handle.fileno())
    fsync_folder(temp)
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / path.name)
    os.replace(temp, path)
    fsync_folder(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
