"""The last stage: every generation of the run judged again by each configured judge, and
how the judges agree.

Runs after everything else has generated, so the studied model can be freed before the
first classifier loads; judges are loaded one at a time and closed after use. A judge
that answers "is this response harmful?" (``question == "harm"``: the HarmBench
classifiers, Llama Guard, the StrongREJECT rubric) judges only generations from harmful
prompts; its verdict on the others is None.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from ..judges.config import JudgingConfig
from ..judges.panel import close, make_judge, question
from ..runtime.files import read_json, write_json
from ..runtime.types import Prompt
from .stats import agreement, verdict_table

log = logging.getLogger(__name__)

HARMFUL_EVALS = frozenset({"jailbreak", "categories", "jailbreak_pairs"})
"""Evaluations whose prompts are harmful requests (their wrapped forms included)."""


@dataclass
class JudgesResult:
    """Each judge's verdict (and score, where it gives one) on every generation, in the
    order of ``RunResult.generations``, with the per-judge tables and their agreement."""

    verdicts: dict[str, list[str | None]] = field(default_factory=dict)
    """judge -> one verdict per generation; None where the judge does not apply."""
    scores: dict[str, list[float | None]] = field(default_factory=dict)
    """judge -> its score per generation (P(yes), P(unsafe), the StrongREJECT score)."""
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    """judge -> ``{evaluation: {method: rates with a Wilson interval}}``."""
    agreement: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``"a vs b"`` -> n, fraction agreeing, Cohen's κ (complied or not), confusion counts."""

    FILE = "judges.json"

    def save(self, folder: Path) -> None:
        write_json(folder / self.FILE, self.__dict__)

    @classmethod
    def load(cls, folder: Path) -> JudgesResult:
        return cls(**read_json(folder / cls.FILE))

    def summary(self) -> dict[str, Any]:
        """``results.json["judges"]``: which judges, their tables and their agreement."""
        return {"names": list(self.verdicts), "tables": self.tables, "agreement": self.agreement}

    def annotate(self, rows: Sequence[dict]) -> list[dict]:
        """Copies of ``rows`` (in the order judged) with every judge's verdict, the scores
        and whether the judges disagree: the lines of generations.jsonl."""
        flags = self.disagreements()
        out = []
        for i, r in enumerate(rows):
            scores = {n: s[i] for n, s in self.scores.items() if s[i] is not None}
            verdicts = {n: v[i] for n, v in self.verdicts.items()}
            out.append(r | {"judgements": verdicts, "scores": scores, "judges_disagree": flags[i]})
        return out

    @classmethod
    def from_rows(cls, rows: Sequence[dict], summary: dict[str, Any]) -> JudgesResult:
        """The inverse of ``annotate`` (with the tables of ``summary()``)."""
        names = summary["names"]
        verdicts = {n: [r["judgements"].get(n) for r in rows] for n in names}
        scores = {n: [r.get("scores", {}).get(n) for r in rows] for n in names[1:]}
        return cls(verdicts, scores, summary["tables"], summary["agreement"])

    def disagreements(self) -> list[bool]:
        """Per generation: whether two judges that both judged it gave different verdicts."""
        columns = list(self.verdicts.values())
        n = len(columns[0]) if columns else 0
        return [len({c[i] for c in columns if c[i] is not None}) > 1 for i in range(n)]


def compute_judges(
    rows: Sequence[dict],
    prompts: Sequence[Prompt],
    primary: str,
    names: Sequence[str],
    cfg: JudgingConfig,
    before_loading: Callable[[], None] = lambda: None,
) -> JudgesResult:
    """Judge ``rows`` (generations with ``eval``, ``method``, ``response`` and the primary
    judge's ``judgement``; ``prompts`` aligned with them) by each of ``names`` in turn.
    ``before_loading`` runs once before the first judge is built (the pipeline frees the
    studied model there)."""
    verdicts: dict[str, list[str | None]] = {primary: [r["judgement"] for r in rows]}
    scores: dict[str, list[float | None]] = {}
    before_loading()
    for name in names:
        judge = make_judge(name, cfg)
        harm_only = question(judge) == "harm"
        todo = [i for i, p in enumerate(prompts) if p.harmful or not harm_only]
        log.info("judge %s: %d of %d generations", name, len(todo), len(rows))
        try:
            got = judge.judge([prompts[i] for i in todo], [rows[i]["response"] for i in todo])
            got_scores = list(getattr(judge, "scores", None) or [None] * len(todo))
        finally:
            close(judge)
        verdicts[name] = _spread(todo, got, len(rows))
        scores[name] = _spread(todo, got_scores, len(rows))
    tables = {
        name: verdict_table(rows, lambda r: r["eval"], _column(rows, v))
        for name, v in verdicts.items()
    }
    pairs = {}
    for a, b in combinations(verdicts, 2):
        x, y = verdicts[a], verdicts[b]
        both = [i for i in range(len(rows)) if x[i] is not None and y[i] is not None]
        pairs[f"{a} vs {b}"] = agreement([x[i] for i in both], [y[i] for i in both])
    return JudgesResult(verdicts, scores, tables, pairs)


def _spread(positions: list[int], values: Sequence, n: int) -> list:
    out: list = [None] * n
    for i, v in zip(positions, values, strict=True):
        out[i] = v
    return out


def _column(rows: Sequence[dict], values: list[str | None]) -> Callable[[dict], str | None]:
    """A row -> its value in ``values`` (rows are looked up by identity, in order)."""
    by_id = {id(r): v for r, v in zip(rows, values, strict=True)}
    return lambda r: by_id[id(r)]


def row_prompts(rows: Sequence[dict], known: Sequence[Prompt]) -> list[Prompt]:
    """The request behind each generation: for a wrapped jailbreak prompt, the plain
    request it wraps (``plain``; HarmBench's classifier, like every harm judge, is asked
    whether the response carries out the *behaviour*, not the wrapper); the run's own
    ``Prompt`` (its labels) where the text is one of ``known``, else a bare prompt, harmful
    when its evaluation is."""
    by_text = {p.instruction: p for p in known}
    out = []
    for r in rows:
        text = r.get("plain") or r["prompt"]
        out.append(by_text.get(text) or Prompt(text, r.get("eval") in HARMFUL_EVALS))
    return out
