"""Text that is safe to show: the one masking of passwords and the one escaping of control
characters, for everything pikenas prints, logs or puts on a page.

:func:`redact` replaces the password of every URL in a text (``scheme://user:PASSWORD@host``,
``?password=...``) by ``***``; :func:`printable` also writes control characters (an arch name
holding ``\\x1b[31m`` or NUL must not reach the terminal raw) as ``\\xNN`` / ``\\uNNNN``.
"""

from __future__ import annotations

import re

__all__ = ["printable", "redact"]

# The password runs to the last "@" before the host part (a "/" or whitespace ends it), so a
# password holding "@" is masked whole.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s/]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&\s]*", re.IGNORECASE)
#: C0 / C1 controls but newline and tab, DEL, and the bidirectional overrides (they reorder
#: what a terminal shows).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda match: match.group("head") + "***@", text)
    return _QUERY_PASSWORD.sub(lambda match: match.group("head") + "***", text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` safe for a terminal or a log line: passwords masked, control characters
    escaped (newlines and tabs kept)."""
    return _CONTROL.sub(_escape, redact(text))
