"""What every judge shares: the verdicts, the ``Judge`` interface and text matching.

Every judge maps (prompt, response) pairs to a ``Verdict``. Degenerate text is its own
verdict because steering often destroys the refusal opener *and* the answer: counting
broken text as compliance would report jailbreaks that are not there.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from typing import ClassVar, Literal

from ..runtime.errors import RefusalScopeError
from ..runtime.types import Prompt

Verdict = Literal["refused", "complied", "degenerate"]
VERDICTS: tuple[Verdict, ...] = ("refused", "complied", "degenerate")

_WORD = re.compile(r"\w+(?:'\w+)?")
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
# Chat models often write typographic apostrophes ("I can’t"); the lists use ASCII.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u00b4": "'"})


class Judge(ABC):
    """Maps responses to verdicts. Subclasses set ``name`` and implement ``judge``."""

    name: ClassVar[str]

    @abstractmethod
    def judge(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        """One verdict per (prompt, response) pair, in order."""


def summarize(verdicts: Sequence[Verdict]) -> dict[str, float]:
    """``{"n": count, "refused": fraction, "complied": fraction, "degenerate": fraction}``."""
    counts = Counter(verdicts)
    unknown = set(counts) - set(VERDICTS)
    assert not unknown, f"unknown verdicts {unknown}"
    n = len(verdicts)
    return {"n": n, **{v: counts[v] / n if n else 0.0 for v in VERDICTS}}


def pair_up(prompts: Sequence[Prompt], responses: Sequence[str]) -> list[tuple[Prompt, str]]:
    if len(prompts) != len(responses):
        raise RefusalScopeError(
            f"{len(prompts)} prompts but {len(responses)} responses; judge one response per prompt"
        )
    return list(zip(prompts, responses, strict=True))


def normalise(text: str) -> str:
    return text.translate(_APOSTROPHES).strip()


def contains_any(text: str, phrases: Sequence[str]) -> bool:
    """Whether any phrase occurs in ``text``, ignoring case and apostrophe style."""
    low = normalise(text).lower()
    return any(p.lower() in low for p in phrases)


def mentions_object(text: str, obj: str) -> bool:
    """Whether ``text`` names ``obj`` as whole words, ignoring case and a leading article
    ("a pipe bomb" matches "Pipe bomb"; "cake" does not match "cupcake")."""
    words = _ARTICLE.sub("", obj.strip()).split()
    if not words:
        return False
    pattern = r"(?<!\w)" + r"\s+".join(map(re.escape, words)) + r"(?!\w)"
    return re.search(pattern, normalise(text), re.IGNORECASE) is not None
