"""Atomic writes of files and bundle folders: :mod:`evaluators._atomic` is the one definition
(temporary file, ``fsync``, ``os.replace``, the user's umask, no writing through links)."""

from __future__ import annotations

from pikenas.evaluators._atomic import atomic_directory, atomic_write

__all__ = ["atomic_write", "atomic_directory"]
