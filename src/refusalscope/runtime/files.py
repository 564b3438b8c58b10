"""Files written whole: JSON/JSONL/safetensors through a temp file and a rename, temp
names that say which process wrote them (so leftovers of dead processes can be removed),
and output folders swapped in whole. Strict JSON (no NaN), no pickle.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import RefusalScopeError

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ temp names
_HOST = platform.node() or "host"
_TEMP = re.compile(r"\.(?:tmp|old)-(?P<host>.+)-(?P<pid>\d+)-\d+$")
_LEGACY_TEMP = re.compile(r"^\..+\.tmp-(?P<pid>\d+)$")
"""``.x.tmp-PID``: temp files of earlier versions (no host in the name)."""


def temp_path(final: Path, kind: str = "tmp") -> Path:
    """A hidden sibling of ``final`` named after this host and process.

    The name lets :func:`clean_stale` recognise leftovers of processes that died.
    """
    return final.parent / f".{final.name}.{kind}-{_HOST}-{os.getpid()}-{time.monotonic_ns()}"


def clean_stale(folder: Path) -> list[Path]:
    """Remove temp files/folders in ``folder`` left by dead processes on this host."""
    removed = []
    for entry in Path(folder).iterdir() if Path(folder).is_dir() else []:
        m = _TEMP.search(entry.name)
        legacy = _LEGACY_TEMP.match(entry.name)
        if m and m["host"] == _HOST:
            pid = int(m["pid"])
        elif legacy:
            pid = int(legacy["pid"])
        else:
            continue
        if pid != os.getpid() and not _alive(pid):
            _remove(entry)
            removed.append(entry)
    if removed:
        log.info("removed %d stale temp file(s) in %s", len(removed), folder)
    return removed


def is_temp(name: str) -> bool:
    """Whether ``name`` is one of our temp files (of any process)."""
    return bool(_TEMP.search(name) or _LEGACY_TEMP.match(name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# ------------------------------------------------------------ output folders
MARKER = ".refusalscope.json"
"""Written last into every output folder: which command wrote it and which files."""


def check_output_folder(out: Path, kind: str, need_bytes: int = 0) -> Path:
    """Raise unless ``out`` can take a new ``kind`` output set; nothing is written.

    ``out`` may be missing, empty, or an earlier ``kind`` output of refusalscope (its
    marker lists every file in it). Anything else is refused: refusalscope never deletes
    what it did not write.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise RefusalScopeError(f"--out {out} is a file; give a folder (new or empty)")
    if out.is_dir():
        _check_ours(out, kind)
    anchor = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not anchor.is_dir() or not os.access(anchor, os.W_OK | os.X_OK):
        raise RefusalScopeError(f"cannot write to {anchor} (for --out {out}); choose another --out")
    free = shutil.disk_usage(anchor).free
    if free < need_bytes:
        raise RefusalScopeError(
            f"only {free / 2**20:.0f} MiB free under {anchor}; the {kind} output needs about "
            f"{need_bytes / 2**20:.0f} MiB. Free some space or choose another --out"
        )
    return out


def _check_ours(out: Path, kind: str) -> None:
    names = sorted(e.name for e in out.iterdir() if not is_temp(e.name))
    if not names:
        return
    try:
        marker = read_json(out / MARKER)
    except (OSError, ValueError):
        marker = None
    fix = f"give a new or empty folder (e.g. --out {out / kind})"
    if not isinstance(marker, dict):
        listed = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise RefusalScopeError(
            f"--out {out} already holds files refusalscope did not write ({listed}); "
            f"refusalscope never deletes what it did not create: {fix}"
        )
    if marker.get("kind") != kind:
        raise RefusalScopeError(
            f"--out {out} holds a refusalscope {marker.get('kind')!r} output, not a {kind!r} "
            f"one; {fix}"
        )
    extra = sorted(set(names) - set(marker.get("files", [])) - {MARKER})
    if extra:
        raise RefusalScopeError(
            f"--out {out} is an earlier {kind} output but also holds {', '.join(extra[:5])}, "
            f"which refusalscope did not write; move those away or {fix}"
        )


@contextmanager
def output_folder(
    out: Path, kind: str, last: Sequence[str] = (), need_bytes: int = 0
) -> Iterator[Path]:
    """Yield a temp folder inside ``out``; on success swap its files into ``out``.

    The whole set is written first (a full disk fails here, leaving the previous set
    untouched); the swap is renames only. The previous set's ``last`` files and marker
    are retired first and the new ones moved in last, so their presence means the whole
    new set is there.
    """
    out = check_output_folder(out, kind, need_bytes)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = temp_path(out / kind)
    try:
        tmp.mkdir()
        yield tmp
        _swap_in(tmp, out, kind, last)
    except OSError as e:
        raise RefusalScopeError(
            f"could not write the {kind} output to {out}: {e.strerror or e}. The previous "
            "contents of the folder are unchanged; fix that and rerun the same command"
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, out: Path, kind: str, last: Sequence[str]) -> None:
    files = sorted(p.name for p in tmp.iterdir())
    try:
        old_files = read_json(out / MARKER).get("files", [])
    except (OSError, ValueError):
        old_files = []
    trash = temp_path(out / kind, "old")
    trash.mkdir()

    def retire(name: str) -> None:
        if (out / name).exists():
            (out / name).rename(trash / name)

    for name in [MARKER, *last, *(f for f in old_files if f not in files)]:
        retire(name)  # first: the old set no longer looks whole, and dropped files go
    for name in [f for f in files if f not in last] + [f for f in last if f in files]:
        retire(name)
        (tmp / name).rename(out / name)
    write_json(out / MARKER, {"kind": kind, "files": files})
    shutil.rmtree(trash, ignore_errors=True)


# ------------------------------------------------------------------ files
def write_json(path: Path, obj: Any) -> None:
    """Strict JSON (NaN/inf refused) through a temp file and rename."""
    path = Path(path)
    try:
        text = json.dumps(obj, indent=2, allow_nan=False, default=_json_default)
    except ValueError as e:
        raise RefusalScopeError(
            f"refusing to write {path.name}: {nonfinite_path(obj) or 'a value'} is NaN or "
            "infinite. A stage produced non-finite numbers; rerun with --verbose and check "
            "the model and SAE weights"
        ) from e
    _write_text(path, text + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = temp_path(path)
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def nonfinite_path(obj: Any, where: str = "") -> str | None:
    """Dotted path of the first NaN/inf float in nested dicts/lists, if any."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else where or "value"
    if isinstance(obj, Mapping):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    return next((p for w, v in items if (p := nonfinite_path(v, w))), None)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def write_jsonl(path: Path, rows: list[Mapping[str, Any]]) -> None:
    """One strict-JSON object per line, written through a temp file and rename."""
    lines = []
    for i, row in enumerate(rows):
        try:
            lines.append(json.dumps(row, allow_nan=False, default=_json_default) + "\n")
        except ValueError as e:
            raise RefusalScopeError(
                f"refusing to write {Path(path).name}: row {i} has a NaN or infinite "
                f"{nonfinite_path(row) or 'value'}"
            ) from e
    _write_text(Path(path), "".join(lines))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    path = Path(path)
    tmp = temp_path(path)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        tmp.replace(path)
    except SafetensorError as e:  # an I/O error (full disk) inside safetensors
        raise OSError(f"{path.name}: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


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
