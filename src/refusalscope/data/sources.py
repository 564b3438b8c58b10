"""Finding a named dataset's published file and reading its rows.

Resolution order for one split's file: the local folder the user gives (the published
layout inside ``DIR/<name>/`` or ``DIR/`` itself) → files already on disk (the Hugging
Face hub cache for hub datasets, ``$REFUSALSCOPE_CACHE/datasets`` for GitHub files) → a
download at the pinned revision. When every step fails (offline: ``HF_HUB_OFFLINE=1``, or
a connection error) one ``RefusalScopeError`` names the dataset, what was tried and the
folder layout that works.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from ..runtime.cache import cache_root
from ..runtime.config import require
from ..runtime.errors import RefusalScopeError
from ..runtime.files import temp_path
from .prompts import read_rows

if TYPE_CHECKING:
    from .registry import DatasetSpec, SplitSpec

log = logging.getLogger(__name__)

OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
"""Either set to 1/true/yes/on: never download (GitHub files included)."""
DOWNLOAD_TIMEOUT_S = 60
_TRUE = {"1", "true", "yes", "on"}


Host = Literal["hf", "github"]
_HOSTS = {
    "hf": "https://huggingface.co/datasets/{repo}/resolve/{revision}",
    "github": "https://raw.githubusercontent.com/{repo}/{revision}",
}


@dataclass(frozen=True)
class Source:
    """Where a dataset's files are downloaded from, pinned to one commit."""

    host: Host
    """``hf``: a Hugging Face dataset repository; ``github``: raw files of a repository."""
    repo: str
    """``owner/name``."""
    revision: str
    """The commit (40 hex digits) every download is pinned to."""
    root: str = ""
    """Folder inside the repository holding the files, ending in ``/`` (or empty)."""

    def __post_init__(self):
        require(self.host in ("hf", "github"), f"Source.host must be hf or github: {self.host}")
        require(
            re.fullmatch(r"[0-9a-f]{40}", self.revision) is not None,
            f"Source.revision for {self.repo} must be a full commit hash, got {self.revision!r}",
        )
        require(self.root == "" or self.root.endswith("/"), "Source.root must end in /")

    def url(self, path: str) -> str:
        """The download address of ``path`` (relative to ``root``) at the pinned commit."""
        base = _HOSTS[self.host].format(repo=self.repo, revision=self.revision)
        return f"{base}/{self.root}{path}"


def offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in OFFLINE_ENV)


def accepted_paths(spec: DatasetSpec, split: str) -> list[str]:
    """Paths a split's file may have inside a local dataset folder: the published path,
    then the bare file name when no other split's file shares it (TDC 2023's two files
    are both ``behaviors.json``, so only their full paths are accepted)."""
    path = spec.splits[split].path
    name = PurePosixPath(path).name
    same = [s for s in spec.splits.values() if PurePosixPath(s.path).name == name]
    unique = all(s.path == path for s in same)
    return [path, name] if unique and name != path else [path]


def local_candidates(spec: DatasetSpec, split: str, local_dir: str | Path) -> list[Path]:
    """Files tried in a local folder, in order: ``DIR/<name>/…`` then ``DIR/…`` (the folder
    may be the dataset's own root)."""
    d = Path(local_dir).expanduser()
    return [root / rel for root in (d / spec.name, d) for rel in accepted_paths(spec, split)]


def locate(spec: DatasetSpec, split: str, local_dir: str | Path | None) -> Path:
    """The file holding ``split`` of ``spec``: local folder, then on-disk caches, then a
    download at the pinned revision; one clear error when none works."""
    tried = []
    if local_dir is not None:
        found = _in_folder(spec, split, local_dir)
        if found is not None:
            return found
        tried.append(_missing_locally(spec, split, Path(local_dir).expanduser()))
        log.warning(
            "%s:%s: not in %s; trying the cache, then a download", spec.name, split, local_dir
        )
    entry = spec.splits[split]
    cached = _cached(spec, entry)
    if cached is not None:
        log.info("%s:%s: using the cached %s", spec.name, split, cached)
        return cached
    tried.append(f"the on-disk cache ({_cache_where(spec, entry)})")
    url = spec.source.url(entry.fetch or entry.path)
    if offline():
        reason = "not attempted: offline (HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set)"
    else:
        try:
            return _download(spec, entry)
        except Exception as e:  # urllib / huggingface_hub raise many types for one failure
            reason = _reason(spec, e)
    tried.append(f"downloading {url} ({reason})")
    raise RefusalScopeError(
        f"dataset {spec.name!r}, split {split!r}: no copy of its file {entry.path!r} was "
        f"found. Tried {'; '.join(tried)}. To run offline, put "
        f"{PurePosixPath(entry.path).name} in {_layout_hint(spec, split)} and pass --dir DIR "
        "(prompts.datasets_dir = DIR in a run config; local_dir=DIR in Python)"
    ) from None


def find_on_disk(spec: DatasetSpec, split: str, local_dir: str | Path | None) -> Path | None:
    """The file ``locate`` would use without downloading (the local folder, then the
    caches); None when only a download would find it."""
    found = _in_folder(spec, split, local_dir) if local_dir is not None else None
    return found or _cached(spec, spec.splits[split])


def _in_folder(spec: DatasetSpec, split: str, local_dir: str | Path) -> Path | None:
    return next((c for c in local_candidates(spec, split, local_dir) if c.is_file()), None)


def _missing_locally(spec: DatasetSpec, split: str, d: Path) -> str:
    if not d.is_dir():
        return f"the folder {d} (it does not exist)"
    looked = ", ".join(str(c.relative_to(d)) for c in local_candidates(spec, split, d))
    return f"the folder {d} (looked for {looked})"


def _layout_hint(spec: DatasetSpec, split: str) -> str:
    rel = PurePosixPath(accepted_paths(spec, split)[-1]).parent
    return f"DIR/{spec.name}/{rel}/" if str(rel) != "." else f"DIR/{spec.name}/"


def _reason(spec: DatasetSpec, e: Exception) -> str:
    first = (str(e).strip().splitlines() or [""])[0][:200]
    why = f"{type(e).__name__}: {first}"
    if type(e).__name__ in ("GatedRepoError", "RepositoryNotFoundError") or "401" in first:
        why += (
            f"; the dataset is gated: accept its terms at "
            f"https://huggingface.co/datasets/{spec.source.repo} and set HF_TOKEN"
        )
    return why


def _hub_cache() -> str | None:
    """The hub cache folder as the environment says now (``huggingface_hub`` reads it
    once, at import)."""
    return os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
    )


def _github_cache(spec: DatasetSpec, entry: SplitSpec) -> Path:
    return cache_root() / "datasets" / spec.name / spec.source.revision / entry.path


def _cache_where(spec: DatasetSpec, entry: SplitSpec) -> str:
    if spec.source.host == "hf":
        return f"Hugging Face hub cache, {spec.source.repo}@{spec.source.revision[:10]}"
    return str(_github_cache(spec, entry))


def _cached(spec: DatasetSpec, entry: SplitSpec) -> Path | None:
    if spec.source.host == "github":
        path = _github_cache(spec, entry)
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(
        spec.source.repo,
        spec.source.root + (entry.fetch or entry.path),
        cache_dir=_hub_cache(),
        revision=spec.source.revision,
        repo_type="dataset",
    )
    return Path(hit) if isinstance(hit, str) else None


def _download(spec: DatasetSpec, entry: SplitSpec) -> Path:
    src = spec.source
    if src.host == "hf":
        from huggingface_hub import hf_hub_download

        log.info("%s: downloading %s from %s@%s", spec.name, entry.path, src.repo, src.revision)
        return Path(
            hf_hub_download(
                src.repo,
                src.root + (entry.fetch or entry.path),
                repo_type="dataset",
                revision=src.revision,
                cache_dir=_hub_cache(),
            )
        )
    url = src.url(entry.fetch or entry.path)
    log.info("%s: downloading %s", spec.name, url)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        data = response.read()
    final = _github_cache(spec, entry)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(final)
    tmp.write_bytes(data)
    os.replace(tmp, final)  # whole or absent: a killed download never looks cached
    return final


# ------------------------------------------------------------------ reading rows
def read_table(path: Path, what: str) -> Iterator[tuple[str, object]]:
    """Rows of a published file, each with where it is (``line 7``, ``row 3``) for errors:
    CSV/TSV (streamed: WildJailbreak's train file is large), JSON (a list, a column-wise
    object, or JSON lines under a ``.json`` name), JSONL, Parquet."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _stream_csv(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return _parquet_rows(path)
    if suffix == ".json":
        return iter(_json_rows(path, what))
    return iter(read_rows(path, what))


def _stream_csv(path: Path, delimiter: str) -> Iterator[tuple[str, dict]]:
    # Completions in WildJailbreak can exceed csv's default 128 KiB field limit.
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 26))
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            for row in reader:
                if None in row:
                    raise RefusalScopeError(
                        f"{path}, line {reader.line_num}: more fields than the header has "
                        "columns; is this the file as published?"
                    )
                yield f"line {reader.line_num}", row
    except csv.Error as e:
        raise RefusalScopeError(f"{path}: not valid CSV ({e})") from e
    except UnicodeDecodeError as e:
        raise RefusalScopeError(f"{path}: not UTF-8 ({e}); re-save it as UTF-8") from e


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except ImportError as e:
        raise RefusalScopeError(f"reading {path} needs pyarrow: pip install pyarrow") from e
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError for a damaged file
        raise RefusalScopeError(f"{path}: not a readable Parquet file ({e})") from e
    for i, row in enumerate(table.to_pylist(), 1):
        yield f"row {i}", row


def _json_rows(path: Path, what: str) -> list[tuple[str, object]]:
    """A ``.json`` file as rows: a list, a column-wise ``{column: [values]}`` object (as
    pandas writes), or one object per line (as ``datasets`` writes)."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return _json_lines(text, path)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        n = {len(v) for v in data.values()}
        if len(n) != 1:
            raise RefusalScopeError(f"{path}: its columns have different lengths {sorted(n)}")
        data = [dict(zip(data, vals, strict=True)) for vals in zip(*data.values(), strict=True)]
    if not isinstance(data, list) or not data:
        raise RefusalScopeError(f"{what} {path} must hold a non-empty list of rows")
    return [(f"row {i}", row) for i, row in enumerate(data, 1)]


def _json_lines(text: str, path: Path) -> list[tuple[str, object]]:
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                raise RefusalScopeError(
                    f"{path}, line {n}, column {e.colno}: not valid JSON ({e.msg}); fix it there"
                ) from e
    if not rows:
        raise RefusalScopeError(f"{path} holds no rows")
    return rows


# ------------------------------------------------------------------ rows -> prompts
def split_rows(
    spec: DatasetSpec, split: str, local_dir: str | Path | None
) -> Iterator[tuple[str, dict]]:
    """The split's rows that pass its filter, each with where it is; a row that is a bare
    string becomes ``{first text column: string}``. An error when no row passes."""
    path = locate(spec, split, local_dir)
    keep = spec.splits[split].keep
    n = 0
    for where, row in read_table(path, f"{spec.name}:{split} file"):
        here = f"{path}, {where}"
        if isinstance(row, str):
            row = {spec.columns.text[0]: row}
        if not isinstance(row, dict):
            raise RefusalScopeError(f"{here}: expected an object or a string, got {str(row)[:80]}")
        if all(_filter_value(row, col, here) in allowed for col, allowed in keep.items()):
            n += 1
            yield here, row
    if n == 0:
        only = "".join(f"; keeping only {c} in {list(v)}" for c, v in keep.items())
        raise RefusalScopeError(f"dataset {spec.name!r} split {split!r}: no rows in {path}{only}")


def _filter_value(row: dict, column: str, where: str) -> str:
    """A filter column's stripped value; a missing column means a wrong file."""
    key = _key(row, column)
    if key is None:
        raise RefusalScopeError(
            f"{where}: no column {column!r} (its columns: {', '.join(map(str, row))}); is "
            "this the file as published?"
        )
    return "" if row[key] is None else str(row[key]).strip()


def _key(row: dict, column: str | None) -> str | None:
    """The row's key matching ``column`` case-insensitively."""
    if column is None:
        return None
    return next((k for k in row if str(k).lower() == column.lower()), None)


def row_text(spec: DatasetSpec, row: dict, where: str) -> tuple[str | None, str]:
    """(key, text) of the first non-empty text column (the first present one if all are
    empty); an error naming the columns when none is present."""
    keys = [k for k in (_key(row, c) for c in spec.columns.text) if k is not None]
    if not keys:
        raise RefusalScopeError(
            f"{where}: none of the columns {', '.join(spec.columns.text)} that hold "
            f"{spec.name}'s text (its columns: {', '.join(map(str, row))}); is this the file "
            "as published?"
        )
    key = next((k for k in keys if isinstance(row[k], str) and row[k].strip()), keys[0])
    value = row[key]
    return key, value if isinstance(value, str) else ("" if value is None else str(value))


def prompt_row(spec: DatasetSpec, split: str, row: dict, where: str) -> dict:
    """The row as ``prompts._row_to_prompt`` reads it: the stripped text, the category, and
    every other published column in ``meta`` with the context, pair id, dataset and split."""
    cols = spec.columns
    text_key, text = row_text(spec, row, where)
    cat_key, ctx_key, pair_key = (_key(row, c) for c in (cols.category, cols.context, cols.pair))
    dropped = {c.lower() for c in cols.drop}
    meta: dict[str, Any] = {
        k: v
        for k, v in row.items()
        if k not in (text_key, cat_key, ctx_key)
        and str(k).lower() not in dropped
        and v not in ("", None)
    }
    if ctx_key is not None and row[ctx_key]:
        meta["context"] = row[ctx_key]
    if pair_key is not None and str(row[pair_key] or "").strip():
        meta["pair_id"] = pair_id(str(row[pair_key]))
    meta.update(dataset=spec.name, split=split)
    category = row[cat_key] if cat_key is not None else None
    return {"instruction": text.strip(), "category": category or None, "meta": meta}


def pair_id(text: str) -> str:
    """The id a vanilla prompt shares with its adversarial rewrites."""
    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]
