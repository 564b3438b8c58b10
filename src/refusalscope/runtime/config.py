"""Typed configs: dataclasses <-> plain dicts, loading from JSON/TOML, and hashing.

Every stage has a frozen dataclass config with a docstring under each field and checks
in ``__post_init__``. These helpers turn nested dataclasses into JSON-able dicts (saved
with every result), back again with an error naming any unknown key, and into a
stable hash used as the cache key.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from .errors import RefusalScopeError

T = TypeVar("T")


def to_dict(cfg: Any) -> Any:
    """A JSON-able copy of a (nested) dataclass config."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def config_hash(*parts: Any, length: int = 16) -> str:
    """Stable hash of configs (and upstream hashes) for cache keys."""
    blob = json.dumps([to_dict(p) for p in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a dict, recursing into nested dataclass fields."""
    if not isinstance(data, Mapping):
        raise RefusalScopeError(f"{where} must be a table/object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise RefusalScopeError(
            f"unknown key(s) {', '.join(unknown)} in {where}; known keys: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise RefusalScopeError(f"invalid {where}: {e}") from e


_SCALARS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _convert(hint: Any, value: Any, where: str) -> Any:
    """``value`` checked against the field type ``hint``: lists become tuples, ints become
    floats where floats are wanted, and table keys become ints where ints are wanted.
    Hints not handled here (``Any``, tensors, ...) pass the value through."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _convert(options[0], value, where) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, where)
    if hint in _SCALARS:
        return _scalar(hint, value, where)
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise RefusalScopeError(f"{where} must be one of {choices}, got {_describe(value)}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise RefusalScopeError(f"{where} must be a list, got {_describe(value)}")
        return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) and len(args) == 2:
        if not isinstance(value, Mapping):
            raise RefusalScopeError(f"{where} must be a table/object, got {_describe(value)}")
        return {
            _key(args[0], k, where): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()
        }
    return value


def _scalar(hint: type, value: Any, where: str) -> Any:
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:  # bool is an int subclass: true must not pass for a count
        ok = isinstance(value, hint) and (hint is bool or not isinstance(value, bool))
    if not ok:
        raise RefusalScopeError(f"{where} must be {_SCALARS[hint]}, got {_describe(value)}")
    return float(value) if hint is float else value


def _key(hint: Any, key: Any, where: str) -> Any:
    if hint is not int:
        return key
    try:
        return int(key)
    except ValueError as e:
        raise RefusalScopeError(f"{where} needs integer keys (layers), got {key!r}") from e


def _describe(value: Any) -> str:
    """A config value as the user wrote it: "the string '5'", "the boolean true", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, Mapping):
        return "a table/object"
    kind = {str: "the string", int: "the integer", float: "the number", list: "the list"}
    return f"{kind.get(type(value), type(value).__name__)} {value!r}"[:100]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.json`` or ``.toml`` config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise RefusalScopeError(f"config file {p} does not exist")
    text = read_utf8(p)
    if p.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise RefusalScopeError(f"config file {p} is not valid JSON: {e}") from e
    if p.suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise RefusalScopeError(f"config file {p} is not valid TOML: {e}") from e
    raise RefusalScopeError(f"config file {p} must end in .json or .toml")


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``data`` with each ``section.field=value`` of ``overrides`` set (CLI ``--set``).

    The value is read as JSON (``20``, ``true``, ``[10, 20]``, ``null``) and otherwise kept
    as text (``float32``); the keys are checked by ``from_dict`` like a config file's.
    """
    out = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, text = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            raise RefusalScopeError(
                f"--set takes section.field=value (e.g. evaluation.k_star=20); got {item!r}"
            )
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RefusalScopeError(f"--set {item}: {part} is a value, not a section")
        node[path[-1]] = value
    return out


def read_utf8(path: Path) -> str:
    """A text file's content (a UTF-8 BOM is fine); an error naming the line of the
    first byte that is not UTF-8."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise RefusalScopeError(
            f"{path}, line {line}: byte {e.object[e.start]:#04x} is not UTF-8; re-save the "
            "file as UTF-8"
        ) from e


def require(cond: bool, message: str) -> None:
    """Config validation for ``__post_init__``: raise a user error unless ``cond``."""
    if not cond:
        raise RefusalScopeError(message)
