"""`pikenas export`."""

from __future__ import annotations

from search.cli import app  # noqa: F401
