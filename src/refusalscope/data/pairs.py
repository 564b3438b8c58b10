"""Jailbreak pairs: a plain harmful request and the same request inside a jailbreak.

Files hold one pair per row with a ``vanilla`` and an ``adversarial`` field (WildJailbreak's
columns; matched case-insensitively), as ``.tsv`` (WildJailbreak's own layout), ``.csv``,
``.jsonl`` or a ``.json`` list. Other fields become labels; a ``tactic``/``wrapper`` field
names the jailbreak's kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..runtime.errors import RefusalScopeError
from ..runtime.types import Prompt
from .prompts import read_rows

PLAIN_KEY, WRAPPED_KEY = "vanilla", "adversarial"
KIND_KEYS = ("wrapper", "tactic", "tactics")


@dataclass(frozen=True)
class PromptPair:
    """One harmful request, plain and wrapped in a jailbreak."""

    plain: Prompt
    adversarial: Prompt
    kind: str | None = None
    """The jailbreak's name when known (the organism's wrapper, a file's ``tactic``)."""


def load_pair_file(path: str | Path) -> list[PromptPair]:
    """Read pairs; one clear error naming the row for a missing or empty side."""
    p = Path(path).expanduser()
    pairs = []
    for where, row in read_rows(p, "jailbreak pair file"):
        if not isinstance(row, dict):
            raise RefusalScopeError(
                f"{p}, {where}: each row must be an object with '{PLAIN_KEY}' and "
                f"'{WRAPPED_KEY}' fields; got {str(row)[:80]}"
            )
        pairs.append(_pair(row, f"{p}, {where}"))
    return pairs


def _pair(row: dict, where: str) -> PromptPair:
    by_lower = {str(k).lower(): k for k in row}
    texts = {}
    for side in (PLAIN_KEY, WRAPPED_KEY):
        value = row.get(by_lower.get(side, side))
        if not isinstance(value, str) or not value.strip():
            raise RefusalScopeError(
                f"{where}: the {side!r} side of the pair is missing or empty; every row needs "
                f"both '{PLAIN_KEY}' (the plain request) and '{WRAPPED_KEY}' (it inside a "
                "jailbreak). Fill it in or remove the row."
            )
        texts[side] = value
    kind_key = next((by_lower[k] for k in KIND_KEYS if k in by_lower), None)
    kind = str(row[kind_key]) if kind_key is not None and row[kind_key] else None
    labels = {k: v for k, v in row.items() if str(k).lower() not in texts and v != ""}
    cat_key = by_lower.get("category")
    category = str(row[cat_key]) if cat_key is not None and row[cat_key] else None
    return PromptPair(
        Prompt(texts[PLAIN_KEY], True, category, labels),
        Prompt(texts[WRAPPED_KEY], True, category, {**labels, "vanilla": texts[PLAIN_KEY]}),
        kind,
    )
