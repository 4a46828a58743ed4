"""Text that is safe to show: the one masking of passwords and the one escaping of control
characters and markup, for everything pikenas prints, logs or puts on a page.

:func:`redact` replaces the password of every URL in a text (``scheme://user:PASSWORD@host``,
``?password=...``) by ``***``; :func:`printable` also writes control characters (an arch name
holding ``\\x1b[31m`` or NUL must not reach the terminal raw) as ``\\xNN`` / ``\\uNNNN``.
:func:`inline` is :func:`printable` on one line (a newline, carriage return or tab inside a user
string is written ``\\n``, ``\\r``, ``\\t``: an ONNX node or cost-table name cannot forge a report
line); every renderer of a user string into a line of a terminal report uses it.
:func:`markdown` is :func:`inline` made inert in Markdown (HTML and every Markdown-active
character backslash-escaped, CommonMark's escape of ASCII punctuation) and :func:`code_span` a
Markdown code span that the text cannot close: what the model card of a bundle uses.
"""

from __future__ import annotations

import re

__all__ = ["code_span", "inline", "markdown", "printable", "redact"]

# The password runs to the last "@" before the host part (a "/" or whitespace ends it), so a
# password holding "@" is masked whole.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s/]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&\s]*", re.IGNORECASE)
#: C0 / C1 controls but newline and tab, DEL, and the bidirectional overrides (they reorder
#: what a terminal shows).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
#: what else ends a line: newline, tab, and the Unicode line / paragraph separators
_LINE_BREAK = re.compile(r"[\n\t\x85\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: characters that Markdown or HTML may act on (CommonMark lets any ASCII punctuation be escaped)
_MARKDOWN_ACTIVE = re.compile(r"([\\`*_{}\[\]()#!|~<>&])")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda match: match.group("head") + "***@", text)
    return _QUERY_PASSWORD.sub(lambda match: match.group("head") + "***", text)


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    if character in _NAMED:
        return _NAMED[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` safe for a terminal or a log line: passwords masked, control characters
    escaped (newlines and tabs kept)."""
    return _CONTROL.sub(_escape, redact(text))


def inline(text: object) -> str:
    """``str(text)`` as one printable line: :func:`printable`, and line breaks and tabs escaped
    (``\\n``, ``\\t``, ``\\u2028``) — a user string inside a line of a report."""
    return _LINE_BREAK.sub(_escape, printable(str(text)))


def markdown(text: object) -> str:
    """``str(text)`` as inert Markdown on one line: :func:`inline`, then every HTML- or
    Markdown-active character backslash-escaped (``<script>`` shows as text, ``|`` cannot end a
    table cell, ``[x](y)`` is no link)."""
    return _MARKDOWN_ACTIVE.sub(r"\\\1", inline(text))


def code_span(text: object) -> str:
    """``str(text)`` as a Markdown code span (shown verbatim, HTML inert) that it cannot close:
    one :func:`inline` line, delimited by more backticks than its longest run of them."""
    shown = inline(text)
    runs = [len(run) for run in re.findall(r"`+", shown)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if shown.startswith("`") or shown.endswith("`") or not shown.strip() else ""
    return f"{fence}{pad}{shown}{pad}{fence}"
