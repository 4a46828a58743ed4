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
  full disk exits 1 and names ``ENOSPC``;
* replace only what pikenas wrote: every write is recorded in the hidden ledger
  ``.pikenas-outputs.json`` of its folder (name -> inode, size and modification time, which a
  rename keeps), and an existing file or folder that the ledger does not list as it is now — a
  user's file, our file edited since, the run's own ``study.log`` — is refused with one line
  (exit 2) before anything is written. The new identity is added before the rename and the
  old one dropped after it, so a kill at any moment leaves the target listed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from pikenas.space.errors import PikeNASError, RunDirError, path_error

__all__ = [
    "LEDGER_NAME",
    "atomic_directory",
    "atomic_write",
    "check_replaceable",
    "check_target",
    "fsync_folder",
    "umask",
    "written_by_pikenas",
]

#: the hidden file in each folder that lists what pikenas wrote there (see the module docstring).
LEDGER_NAME = ".pikenas-outputs.json"
_LEDGER_MAX_BYTES = 4 * 1024 * 1024

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


def _identity(status: os.stat_result, folder: bool) -> list[int]:
    """What a rename keeps of a file: inode, size, modification time (a folder: its inode)."""
    if folder:
        return [status.st_ino]
    return [status.st_ino, status.st_size, status.st_mtime_ns]


def _in_construction(folder: Path) -> bool:
    """``folder`` is the temporary folder of an :func:`atomic_directory` (new, so ours)."""
    return re.fullmatch(r"\..+\.\d+\.[0-9a-f]{8}\.tmp", folder.name) is not None


def _read_ledger(folder: Path) -> dict[str, list[list[int]]]:
    try:
        with (folder / LEDGER_NAME).open("rb") as handle:
            raw = handle.read(_LEDGER_MAX_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError:
        return {}
    if len(raw) > _LEDGER_MAX_BYTES:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}  # a damaged ledger vouches for nothing: nothing is replaced
    if not isinstance(data, dict):
        return {}
    return {
        name: [i for i in ids if isinstance(i, list) and all(isinstance(n, int) for n in i)]
        for name, ids in data.items()
        if isinstance(name, str) and isinstance(ids, list)
    }


@contextlib.contextmanager
def _ledger(folder: Path) -> Iterator[dict[str, list[list[int]]]]:
    """The ledger of ``folder``, read and rewritten (atomically) under a lock on the folder."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        entries = _read_ledger(folder)
        yield entries
        data = json.dumps(entries, sort_keys=True).encode()
        temporary = folder / _temporary_name(Path(LEDGER_NAME), ".tmp")
        with temporary.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~umask())
        os.replace(temporary, folder / LEDGER_NAME)
    finally:
        os.close(descriptor)


def written_by_pikenas(path: Path, *, folder: bool = False) -> bool:
    """Whether ``path`` is, as it is now, something pikenas wrote (a missing ``path``: True)."""
    try:
        status = path.lstat()
    except FileNotFoundError:
        return True
    except OSError as exc:
        raise path_error(exc, path) from None
    if _in_construction(path.parent):
        return True
    return _identity(status, folder) in _read_ledger(path.parent).get(path.name, [])


def check_replaceable(path: Path, *, folder: bool = False) -> None:
    """Refuse, with one line, a ``path`` that a later :func:`atomic_write` (``folder``:
    :func:`atomic_directory`) would refuse: a link, a special file, or something pikenas did
    not write. A command checks every output this way before it writes anything."""
    check_target(path, folder=folder)
    _check_owned(path, folder=folder)


def _check_owned(path: Path, *, folder: bool = False) -> None:
    if not written_by_pikenas(path, folder=folder):
        what = "folder" if folder else "file"
        raise RunDirError(
            f"{path} exists and is not a {what} pikenas wrote (or was changed since); pikenas "
            "replaces only its own outputs: move it away or choose another path"
        )


def _record(path: Path, new: os.stat_result, *, folder: bool, keep_old: bool) -> None:
    """List ``new`` as ``path``'s identity in its folder's ledger (``keep_old``: beside the
    current one, until the rename has happened)."""
    if _in_construction(path.parent):
        return
    with _ledger(path.parent) as entries:
        known = entries.get(path.name, []) if keep_old else []
        entries[path.name] = [*known[-1:], _identity(new, folder)] if keep_old else [
            _identity(new, folder)
        ]


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
    _check_owned(path)
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
        written = temporary.stat()
        _record(path, written, folder=False, keep_old=True)
        os.replace(temporary, path)
        fsync_folder(path.parent)
        _record(path, written, folder=False, keep_old=False)
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
    _remove_stale(path)  # may put back a folder a killed swap had moved aside
    _check_owned(path, folder=True)
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
        built = temp.stat()
        _record(path, built, folder=True, keep_old=True)
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
        _record(path, built, folder=True, keep_old=False)
    except BaseException as exc:
        shutil.rmtree(temp, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, PikeNASError):
            raise path_error(exc, path) from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
