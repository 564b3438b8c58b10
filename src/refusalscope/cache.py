"""Artifacts on disk: one folder per (stage, config hash), completed atomically.

A stage writes into a temporary sibling folder; on success a ``_COMPLETE.json``
marker (with provenance) is written last and the folder is renamed into place, so a
crash never leaves a half-result that looks whole. Tensors go to safetensors, the
rest to JSON/JSONL. No pickle.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

COMPLETE = "_COMPLETE.json"
CACHE_ENV = "REFUSALSCOPE_CACHE"


def cache_root() -> Path:
    """Base folder of all cached artifacts (``$REFUSALSCOPE_CACHE`` overrides)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "refusalscope"


@cache
def versions() -> dict[str, str | None]:
    """Package versions and git hash recorded with every artifact."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in (
        "refusalscope",
        "torch",
        "transformers",
        "sae-lens",
        "safetensors",
        "tokenizers",
        "numpy",
    ):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    out["git_hash"] = _git_hash()
    return out


def _git_hash() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


@cache
def code_fingerprint(parts: tuple[str, ...] = ()) -> str:
    """Hash of refusalscope's source files (all, or the given files/sub-packages).

    Part of every cache key, so a code change never reuses results computed by older code.
    """
    import hashlib

    root = Path(__file__).parent
    paths = [p for part in parts or (".",) for p in _python_files(root / part)]
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _python_files(path: Path) -> list[Path]:
    """``path`` itself if it is a file, else the ``.py`` files under it; missing: an error."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"code fingerprint: no module or package {path}")
    return list(path.rglob("*.py"))


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks (weight files can be gigabytes)."""
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(folder: Path, pattern: str = "*.safetensors") -> dict[str, str]:
    """SHA-256 of every file under ``folder`` matching ``pattern``, by relative path."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(Path(folder).rglob(pattern))
    }


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE).is_file()


@contextmanager
def atomic_folder(final: Path, meta: Mapping[str, Any] | None = None) -> Iterator[Path]:
    """Yield a temp folder; on success mark it complete and move it to ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        yield tmp
        write_json(tmp / COMPLETE, {"meta": dict(meta or {}), "versions": versions()})
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON through a temp file and rename (never a half-written file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_jsonl(path: Path, rows: list[Mapping[str, Any]]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, default=_json_default) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
