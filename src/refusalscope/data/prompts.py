"""Prompt files and text passages, read with one clear error per problem.

Prompt files: JSON lists of strings or of ``{"instruction", "category"}`` objects (the
refusal_direction format), JSONL with the same rows, or CSV/TSV with an ``instruction`` (or
``prompt``/``goal``/``behavior``) column. Text passages: ``.txt`` (one per non-empty line)
or ``.jsonl`` with a ``text`` field.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

from ..runtime.config import read_utf8
from ..runtime.errors import RefusalScopeError
from ..runtime.types import Prompt

log = logging.getLogger(__name__)

TEXT_KEYS = ("instruction", "prompt", "goal", "behavior", "question", "text")
"""Fields that hold the prompt text, in order of preference (JailbreakBench has both
``Goal``, the request, and ``Behavior``, a short name; CATQA's is ``Question``)."""
CATEGORY_KEYS = ("category", "semanticcategory")


def load_prompt_file(path: str | Path, harmful: bool | None) -> list[Prompt]:
    """Read instructions from JSON / JSONL / CSV into ``Prompt``s.

    Errors name the file and the line (or JSON list row) at fault. Duplicate
    instructions are kept, so each is used as often as it appears, with a warning.
    """
    p = Path(path).expanduser()
    located = read_rows(p, "prompt file")
    prompts = [_row_to_prompt(row, harmful, f"{p}, {where}") for where, row in located]
    _warn_duplicates(prompts, p)
    return prompts


def read_rows(p: Path, what: str) -> list[tuple[str, object]]:
    """The rows of a ``.json`` list, ``.jsonl``, ``.csv`` or ``.tsv`` file, each with where
    it is in the file (``row 3``, ``line 7``) for error messages; never empty."""
    if not p.is_file():
        raise RefusalScopeError(f"{what} {p} does not exist")
    if p.suffix not in (".json", ".jsonl", ".csv", ".tsv"):
        raise RefusalScopeError(f"{what} {p} must be .json, .jsonl, .csv or .tsv")
    text = read_utf8(p)
    if p.suffix == ".json":
        rows = _json(text, p)
        if not isinstance(rows, list):
            raise RefusalScopeError(f"{p} must hold a list of rows")
        located = [(f"row {i}", row) for i, row in enumerate(rows, 1)]
    elif p.suffix == ".jsonl":
        located = [(f"line {n}", _json(line, p, n)) for n, line in _nonblank_lines(text)]
    else:
        located = _csv_rows(text, p, "\t" if p.suffix == ".tsv" else ",")
    if not located:
        raise RefusalScopeError(f"{what} {p} holds no rows")
    return located


def _json(text: str, path: Path, line: int | None = None):
    """Parsed JSON; an error naming the file, line and column (``line``: of a JSONL row)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = f"line {line}, column {e.colno}" if line else f"line {e.lineno}, column {e.colno}"
        raise RefusalScopeError(f"{path}, {where}: not valid JSON ({e.msg}); fix it there") from e


def _nonblank_lines(text: str) -> list[tuple[int, str]]:
    """(1-based line number, line) for each non-blank line, numbered as in the file."""
    return [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]


def _csv_rows(text: str, path: Path, delimiter: str = ",") -> list[tuple[str, dict]]:
    """Rows with the file line each ends on (the header is line 1)."""
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            if None in row:
                raise RefusalScopeError(
                    f"{path}, line {reader.line_num}: more fields than the header has columns; "
                    "quote fields that contain commas"
                )
            rows.append((f"line {reader.line_num}", row))
    except csv.Error as e:
        raise RefusalScopeError(f"{path}, line {reader.line_num}: not valid CSV ({e})") from e
    return rows


def _row_to_prompt(row, harmful: bool | None, where: str) -> Prompt:
    """A row's text and category; its other fields (and a ``meta`` object) become labels.

    Field names match case-insensitively, so HarmBench's ``Behavior``/``SemanticCategory``
    and JailbreakBench's ``Goal``/``Category`` columns load as published. ``where`` names
    the file and row for errors.
    """
    if isinstance(row, str):
        if not row.strip():
            raise RefusalScopeError(f"{where}: empty instruction; remove the row or fill it in")
        return Prompt(row, harmful)
    if not isinstance(row, dict):
        raise RefusalScopeError(
            f"{where}: each row must be a string or an object with an instruction field; "
            f"got {type(row).__name__}: {str(row)[:80]}"
        )
    by_lower = {str(k).lower(): k for k in row}
    present = [by_lower[k] for k in TEXT_KEYS if k in by_lower]
    if not present:
        raise RefusalScopeError(
            f"{where}: none of the fields {', '.join(TEXT_KEYS)} (case-insensitive); "
            f"its fields are {', '.join(map(str, row)) or 'none'}. Rename the field that "
            "holds the prompt text to one of those."
        )
    key = next((k for k in present if row[k] is not None and str(row[k]).strip()), None)
    if key is None:
        raise RefusalScopeError(f"{where}: empty instruction; remove the row or fill it in")
    if not isinstance(row[key], str):
        raise RefusalScopeError(
            f"{where}: the {key!r} field must be a string, got {type(row[key]).__name__}: "
            f"{str(row[key])[:80]}"
        )
    cat_key = next((by_lower[k] for k in CATEGORY_KEYS if k in by_lower), None)
    nested = row.get("meta")
    if nested is not None and not isinstance(nested, dict):
        raise RefusalScopeError(f"{where}: 'meta' must be an object, got {str(nested)[:80]}")
    meta = {k: v for k, v in row.items() if k not in (key, cat_key, "meta") and v != ""}
    category = (row[cat_key] or None) if cat_key is not None else None
    return Prompt(row[key], harmful, category, {**meta, **(nested or {})})


def _warn_duplicates(prompts: list[Prompt], path: Path) -> None:
    n_distinct = len({p.instruction for p in prompts})
    if n_distinct < len(prompts):
        log.warning(
            "%s: %d of %d prompts are duplicates of others (%d distinct); each is used as "
            "often as it appears",
            path,
            len(prompts) - n_distinct,
            len(prompts),
            n_distinct,
        )


def load_text_passages(path: str | Path) -> list[str]:
    """Plain-text passages: non-empty lines of a ``.txt``, or ``text`` fields of a ``.jsonl``."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise RefusalScopeError(f"text file {p} does not exist")
    if p.suffix not in (".txt", ".jsonl"):
        raise RefusalScopeError(f"text file {p} must be .txt (a passage per line) or .jsonl")
    lines = _nonblank_lines(read_utf8(p))
    if p.suffix == ".txt":
        passages = [line for _, line in lines]
    else:
        passages = [_text_field(_json(line, p, n), f"{p}, line {n}") for n, line in lines]
    if not passages:
        raise RefusalScopeError(f"text file {p} holds no text")
    return passages


def _text_field(row, where: str) -> str:
    if not isinstance(row, dict) or not isinstance(row.get("text"), str):
        raise RefusalScopeError(
            f"{where}: every line of a .jsonl text file must be an object with a 'text' "
            f"field holding a string; got {str(row)[:80]}"
        )
    return row["text"]
