"""pikenas's one way of writing an output: atomic, with the user's umask, never through a link.

:func:`atomic_write` writes a file and :func:`atomic_directory` a whole folder so that a reader
(or a crash) sees the old one or the new one, never a mixture: the content goes to a temporary
``.NAME.<pid>.<random>.tmp`` next to the target, is ``fsync``-ed, renamed over the target with
``os.replace``, and the folder is ``fsync``-ed so the rename survives a power cut. Both

* refuse a target that is a symbolic link, a folder (for a file), a device or another special
  file (``--out /dev/full`` must not replace the device node);
* give the result the permissions of the user's umask (``mkstemp`` would make it 0600);
* remove the temporary files a killed writer left for the same target (their pid is dead);
* turn an ``OSError`` into one line (:func:`space.errors.path_error`): a bad path exits 2, a
  full disk exits 1 and names ``ENOSPC``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from pikenas.space.errors import PikeNASError, RunDirError, path_error

__all__ = ["atomic_directory", "atomic_write", "check_target", "fsync_folder", "umask"]

#: a temporary name keeps at most this much of the target's name (file names end at 255 bytes).
_NAME_KEEP = 120


def umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_target(path: Path, *, folder: bool = False) -> None:
    """Refuse to replace ``path`` when it is a link or not a regular file (``folder``: not a
    folder); a missing ``path`` is fine."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise path_error(exc, path) from None
    kind = "folder" if folder else "file"
    if stat.S_ISLNK(mode):
        raise RunDirError(
            f"{path} is a symbolic link; pikenas writes no {kind} through a link: remove the "
            "link or choose another path"
        )
    if folder and not stat.S_ISDIR(mode):
        raise RunDirError(f"{path} exists and is not a folder; move it or choose another path")
    if not folder and stat.S_ISDIR(mode):
        raise RunDirError(f"{path} is a folder; give the path of a file to write")
    if not folder and not stat.S_ISREG(mode):
        raise RunDirError(
            f"{path} is a device or special file, not a regular file; choose another path"
        )


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(
            f"cannot write {path}: a part of its folder is a file; choose another path"
        ) from None
    except OSError as exc:
        raise path_error(exc, path.parent, "create folder") from None


def _temporary_name(path: Path, suffix: str) -> str:
    return f".{path.name[:_NAME_KEEP]}.{os.getpid()}.{secrets.token_hex(4)}{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(path: Path) -> None:
    """Remove temporary files and folders of ``path`` left by writers that are dead."""
    pattern = re.compile(
        re.escape(f".{path.name[:_NAME_KEEP]}.") + r"(\d+)\.[0-9a-f]{8}\.(tmp|old)$"
    )
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if match.group(2) == "old" and not os.path.lexists(path):
                os.replace(entry.path, path)  # killed between its two renames: put it back
            elif entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)


def fsync_folder(folder: Path) -> None:
    """Make the entries of ``folder`` (a rename, a new file) durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: str | Path, content: str | bytes | Callable[[Path], None]) -> Path:
    """Write ``path`` atomically (see the module docstring): ``content`` is UTF-8 text, bytes,
    or ``write(temporary_path)``. Returns ``path``."""
    path = Path(path)
    check_target(path)
    _make_parent(path)
    _remove_stale(path)
    temporary = path.with_name(_temporary_name(path, ".tmp"))
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            if callable(content):
                os.close(descriptor)
                descriptor = -1
                content(temporary)
                descriptor = os.open(temporary, os.O_RDONLY)
            else:
                data = content.encode("utf-8") if isinstance(content, str) else content
                view = memoryview(data)
                while view:
                    view = view[os.write(descriptor, view) :]
            os.fchmod(descriptor, 0o666 & ~umask())
            os.fsync(descriptor)
        finally:
            if descriptor >= 0:
                os.close(descriptor)
        os.replace(temporary, path)
        fsync_folder(path.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, PikeNASError):
            raise path_error(exc, path) from None
        raise
    return path


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path``.

    On an exception the temporary folder is removed and an existing ``path`` is left untouched.
    An existing ``path`` (a folder; the caller decides whether it may be replaced) is swapped
    out by two renames, then deleted.
    """
    path = Path(path)
    check_target(path, folder=True)
    _make_parent(path)
    _remove_stale(path)
    temp = path.with_name(_temporary_name(path, ".tmp"))
    try:
        temp.mkdir(mode=0o777)  # the umask applies
    except OSError as exc:
        raise path_error(exc, path) from None
    try:
        yield temp
        for entry in temp.iterdir():  # the files' data must be durable before the folder appears
            if entry.is_file():
                with entry.open("rb") as handle:
                    os.fsync(handle.fileno())
        fsync_folder(temp)
        old = None
        if path.exists():
            old = path.with_name(_temporary_name(path, ".old"))
            os.replace(path, old)
        try:
            os.replace(temp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        fsync_folder(path.parent)
    except BaseException as exc:
        shutil.rmtree(temp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, PikeNASError):
            raise path_error(exc, path) from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
