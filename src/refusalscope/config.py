"""Typed configs: dataclasses <-> plain dicts, loading from JSON/TOML, and hashing.

Every stage has a frozen dataclass config with a docstring under each field and checks
in ``__post_init__``. These helpers turn nested dataclasses into JSON-able dicts (saved
with every result), back again with an error naming any unknown key, and into a
stable hash used as the cache key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types
import typing
from collections.abc import Mapping
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


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(args[0], value, where) if len(args) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return from_dict(hint, value, where)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (dict, Mapping) and isinstance(value, Mapping):
        key_t = typing.get_args(hint)[0] if typing.get_args(hint) else str
        if key_t is int:
            try:
                return {int(k): v for k, v in value.items()}
            except ValueError as e:
                raise RefusalScopeError(f"{where} needs integer keys (layers): {e}") from e
    return value


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.json`` or ``.toml`` config file into a dict."""
    p = Path(path)
    if not p.is_file():
        raise RefusalScopeError(f"config file {p} does not exist")
    text = p.read_text()
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


def require(cond: bool, message: str) -> None:
    """Config validation for ``__post_init__``: raise a user error unless ``cond``."""
    if not cond:
        raise RefusalScopeError(message)
