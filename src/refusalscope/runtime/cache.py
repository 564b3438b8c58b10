"""The cache: one folder per (stage, config hash), completed atomically.

A stage writes into a temporary sibling folder; on success a ``_COMPLETE.json``
marker (with provenance) is written last and the folder is renamed into place, so a
crash never leaves a half-result that looks whole. Keys are built from configs, the
code's fingerprint and the contents (never the paths) of local models and SAEs.
"""

from __future__ import annotations

import errno
import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from .files import clean_stale, read_json, sha256_file, temp_path, write_json

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

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


PACKAGE_ROOT = Path(__file__).resolve().parents[1]
"""The ``refusalscope`` package folder."""


@cache
def code_fingerprint(*modules: str) -> str:
    """Hash of the source of ``modules`` (dotted names, e.g. ``refusalscope.stages.direction``)
    and of every refusalscope module they import, directly or not.

    Part of every cache key: a change to code a stage runs invalidates its results, while
    a change elsewhere (the report, the CLI) does not. The modules are found by reading the
    import statements, so there is no list to keep up to date.
    """
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(module_closure(modules)):
        digest.update(path.relative_to(PACKAGE_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def module_closure(modules: Iterable[str]) -> set[Path]:
    """Source files of ``modules``, the refusalscope modules they import (transitively,
    including imports inside functions; not those under ``if TYPE_CHECKING:``) and the
    ``__init__.py`` of every package on the way."""
    todo, seen, files = list(modules), set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is None:
            raise ModuleNotFoundError(f"code fingerprint: no refusalscope module {name}")
        files.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages
        is_package = path.name == "__init__.py"
        todo += [m for m in _imports(path, name, is_package) if _module_file(m) is not None]
    return files


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != PACKAGE_ROOT.name:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path, name: str, is_package: bool) -> Iterator[str]:
    """Dotted names a module's import statements may load (modules, or names in them)."""
    import ast

    package = name if is_package else name.rpartition(".")[0]
    stack: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"))]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack += node.orelse
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            yield base
            yield from (f"{base}.{a.name}" for a in node.names)  # ``from pkg import module``
        stack += ast.iter_child_nodes(node)


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE).is_file()


# ------------------------------------------------------------ cache folders
@contextmanager
def key_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on cache key ``folder`` (a hidden ``.lock`` file beside it).

    Two runs that need the same stage take turns: the second waits, then finds the
    first one's result complete instead of computing it again.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f".{folder.name}.lock").open("a") as f:
        if fcntl is None:  # pragma: no cover - Windows: no cross-process lock
            yield
            return
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for another process computing %s", folder)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def atomic_folder(
    final: Path, meta: Mapping[str, Any] | None = None, replace: bool = False
) -> Iterator[Path]:
    """Yield a temp folder; on success mark it complete and rename it to ``final``.

    Only for folders refusalscope owns (the cache). Completion is one rename of a fully
    written folder, so ``is_complete(final)`` implies every file is there. If another
    writer completed ``final`` first, its folder is kept and ours dropped; ``replace``
    swaps ours in instead (the old folder is renamed away before it is deleted).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final.parent)
    tmp = temp_path(final)
    tmp.mkdir()
    try:
        yield tmp
        write_json(tmp / COMPLETE, {"meta": dict(meta or {}), "versions": versions()})
        _publish(tmp, final, replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, final: Path, replace: bool) -> None:
    try:
        tmp.rename(final)
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if is_complete(final) and not replace:
        log.info("%s was completed by another process; keeping that copy", final)
        return
    old = temp_path(final, "old")
    final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------- content fingerprints
FINGERPRINTS = "fingerprints.json"


def folder_fingerprint(folder: Path) -> str:
    """Hash of a local model or SAE folder's contents (not its path).

    Covers every non-hidden file: its relative path, size and SHA-256. File hashes are
    remembered by (path, size, mtime) in the cache, so only new or changed files are read.
    """
    import hashlib

    folder = Path(folder).expanduser().resolve()
    memo_path = cache_root() / FINGERPRINTS
    try:
        memo = read_json(memo_path)
    except (OSError, ValueError):
        memo = {}
    digest, changed = hashlib.sha256(), False
    for path in sorted(_visible_files(folder)):
        st = path.stat()
        key = str(path)
        known = memo.get(key)
        if known is None or known[:2] != [st.st_size, st.st_mtime_ns]:
            memo[key], changed = [st.st_size, st.st_mtime_ns, sha256_file(path)], True
        rel = path.relative_to(folder).as_posix()
        digest.update(f"{rel}\0{st.st_size}\0{memo[key][2]}\n".encode())
    if changed:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(memo_path, memo)
    return digest.hexdigest()[:16]


def _visible_files(folder: Path) -> Iterator[Path]:
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).parts
        if path.is_file() and not any(part.startswith(".") for part in rel):
            yield path


def source_key(source: str | Path) -> str:
    """What a cache key uses for a model or SAE source: a local folder's content
    fingerprint, else the name itself (a hub id or ``release:sae_id``)."""
    path = Path(source).expanduser()
    return f"content:{folder_fingerprint(path)}" if path.is_dir() else str(source)
