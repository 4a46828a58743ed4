"""The one reader of the YAML and JSON files users hand pikenas (configs, cost tables,
architectures, training folders): hostile text becomes one line, never a traceback.

Both refuse duplicate keys (the last one would silently win), nesting deeper than
:data:`MAX_DEPTH`, and files larger than :data:`MAX_BYTES`; JSON refuses ``NaN`` / ``Infinity``
and YAML refuses aliases (``*name``: a few lines could expand to gigabytes). Problems raise the
caller's error class (a :class:`~space.errors.PikeNASError`) as ``SOURCE: what; how to fix``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pikenas.space.errors import PikeNASError

__all__ = ["MAX_BYTES", "MAX_DEPTH", "parse_json", "parse_yaml", "read_text"]

MAX_DEPTH = 64
MAX_BYTES = 16 << 20


def read_text(path: str | Path, error: type[PikeNASError], what: str = "file") -> str:
    """The UTF-8 text of ``path`` (a regular file of at most :data:`MAX_BYTES`)."""
    path = Path(path)
    try:
        if not path.is_file():
            raise error(f"{path}: no such {what}; give the path of a file")
        if path.stat().st_size > MAX_BYTES:
            raise error(f"{path}: larger than {MAX_BYTES >> 20} MiB; this is not a {what}")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}: not UTF-8 text (byte {exc.start}); save the {what} as UTF-8"
        ) from None
    except OSError as exc:
        raise error(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _depth_error(source: str, error: type[PikeNASError]) -> PikeNASError:
    return error(f"{source}: nested deeper than {MAX_DEPTH} levels; this is not a pikenas file")


def _check_depth(value: Any, source: str, error: type[PikeNASError]) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _depth_error(source, error)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((child, depth + 1) for child in item)


def parse_json(text: str | bytes, source: str, error: type[PikeNASError]) -> Any:
    """Parse JSON text (see the module docstring)."""
    if len(text) > MAX_BYTES:
        raise error(f"{source}: larger than {MAX_BYTES >> 20} MiB; this is not a pikenas file")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise error(f"{source}: key {key!r} appears twice; keep one of them")
            result[key] = value
        return result

    def constant(name: str) -> Any:
        raise error(f"{source}: {name} is not a number pikenas accepts; give a finite number")

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except RecursionError:
        raise _depth_error(source, error) from None
    except UnicodeDecodeError as exc:
        raise error(f"{source}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise error(
            f"{source}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    _check_depth(data, source, error)
    return data


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing duplicate keys, aliases and deep nesting."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "aliases (*name) are not supported; write the value out",
                event.start_mark,
            )
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.constructor.ConstructorError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: construct_mapping reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice; keep one of them",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str, error: type[PikeNASError]) -> Any:
    """Parse YAML text safely (``yaml.SafeLoader``, no Python objects; see the module
    docstring)."""
    if len(text) > MAX_BYTES:
        raise error(f"{source}: larger than {MAX_BYTES >> 20} MiB; this is not a pikenas file")
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except RecursionError:
        raise _depth_error(source, error) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise error(f"{source}: not valid YAML{where}: {problem}; fix it") from None
