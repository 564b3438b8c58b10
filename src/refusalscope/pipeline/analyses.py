"""Stages 11–13, the analyses: harm categories, jailbreak prompts, OOD probes.

Each runs when its inputs exist and is otherwise skipped with the reason in
``results.json``: categories need category-labelled harmful prompts (the organism's
always are); the jailbreak analysis needs (plain, adversarial) pairs (the organism's
wrapped prompts, or ``analysis.jailbreak_pairs``); the probes always run, out of
distribution only when there are pairs.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from ..analysis.categories import CategoryResult, compute_categories, usable_groups
from ..analysis.config import AnalysisConfig
from ..analysis.jailbreaks import JailbreakAnalysisResult, compute_jailbreak_analysis
from ..analysis.probes import ProbeData, ProbeResult, compute_probes, labelled
from ..data.pairs import PromptPair, load_pair_file
from ..evaluation.steering import Steering
from ..runtime.errors import RefusalScopeError
from ..runtime.files import sha256_file
from .context import Context

log = logging.getLogger(__name__)


@dataclass
class Analyses:
    """The analyses' results (None: skipped, with the reason in ``skipped``)."""

    categories: CategoryResult | None = None
    jailbreak_analysis: JailbreakAnalysisResult | None = None
    probes: ProbeResult | None = None
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The three ``results.json`` sections."""
        out: dict[str, Any] = {}
        for name in ("categories", "jailbreak_analysis", "probes"):
            result = getattr(self, name)
            out[name] = result.table if result is not None else {"skipped": self.skipped[name]}
        return out

    @classmethod
    def from_summary(cls, summary: dict[str, Any], rows: list[dict]) -> Analyses:
        """The inverse of ``summary`` (+ the generations): what ``load_run`` reads back."""
        out = cls()
        tagged = {tag: [r for r in rows if r.get("eval") == tag] for tag in _ROW_TAGS.values()}
        for name, result_cls in _RESULTS.items():
            section = summary.get(name) or {"skipped": "not in this output (older refusalscope)"}
            if "skipped" in section:
                out.skipped[name] = section["skipped"]
            else:
                setattr(out, name, result_cls(section, tagged.get(_ROW_TAGS.get(name), [])))
        return out

    @property
    def rows(self) -> list[dict]:
        found = (self.categories, self.jailbreak_analysis, self.probes)
        return [row for r in found if r is not None for row in r.rows]


_RESULTS = {
    "categories": CategoryResult,
    "jailbreak_analysis": JailbreakAnalysisResult,
    "probes": ProbeResult,
}
_ROW_TAGS = {"categories": "categories", "jailbreak_analysis": "jailbreak_pairs"}
"""The ``eval`` tag of each analysis' rows in generations.jsonl."""


def organism_pairs(ctx: Context) -> list[PromptPair]:
    """The organism's exact pairs: each held-out harmful request under a working and a
    failing wrapper (same index in the three sets)."""
    assert ctx.organism_data is not None
    sets = ctx.organism_data.eval_sets
    return [
        PromptPair(plain, wrapped, wrapped.meta.get("wrapper"))
        for name in ("harmful_working_wrapper", "harmful_failing_wrapper")
        for plain, wrapped in zip(sets["harmful_heldout"], sets[name], strict=True)
    ]


def pair_source(ctx: Context) -> tuple[list[PromptPair], str] | None:
    """The pairs and what keys them in the cache, or None when there are none."""
    path = ctx.cfg.analysis.jailbreak_pairs
    if path is not None:
        return load_pair_file(path), sha256_file(path)
    if ctx.organism_data is not None:
        return organism_pairs(ctx), ctx.model_key
    return None


def run_analyses(ctx: Context, d, steer: Steering, upstream: tuple) -> Analyses:
    """The three analysis stages (``d``: the discovery results; ``upstream``: the key parts
    of the evaluation they build on)."""
    a = ctx.cfg.analysis
    out = Analyses()
    if not a.categories:
        out.skipped["categories"] = "turned off (analysis.categories = false)"
    elif (reason := _categories_unusable(d.prompts.splits, a)) is not None:
        out.skipped["categories"] = reason
        log.warning("category analysis skipped: %s", reason)
    else:
        out.categories = _categories(ctx, d, steer, (*upstream, _settings(a, "categories")))
    found = pair_source(ctx)
    if found is None:
        out.skipped["jailbreak_analysis"] = "no jailbreak pairs (set analysis.jailbreak_pairs)"
    else:
        key = (*upstream, _settings(a, "jailbreak_analysis"))
        out.jailbreak_analysis = _jailbreaks(ctx, d, steer, key, *found)
    if not a.probes:
        out.skipped["probes"] = "turned off (analysis.probes = false)"
        return out
    data = _probe_data(d.prompts, out.jailbreak_analysis)
    fstar = steer.features.global_set("fstar", a.probe_k)
    out.probes = ctx.cached(
        "probes",
        (*upstream, _settings(a, "probes"), ctx.keys.get("jailbreak_analysis")),
        lambda: compute_probes(
            ctx.model,
            steer.saes,
            steer.direction,
            steer.layer,
            fstar,
            data,
            a,
            ctx.cfg.evaluation.batch_size,
        ),
        ProbeResult,
    )
    return out


_SETTINGS = {
    "categories": ("min_category_prompts", "category_k_star", "only_categories"),
    "jailbreak_analysis": ("max_pairs", "last_positions"),
    "probes": ("probe_k", "probe_random_draws", "probe_C"),
}
"""The ``AnalysisConfig`` fields each analysis reads (besides ``n_bootstrap`` and ``seed``):
its cache key holds only these, so changing one analysis' setting recomputes only it."""


def _settings(a: AnalysisConfig, stage: str) -> dict:
    return {f: getattr(a, f) for f in (*_SETTINGS[stage], "n_bootstrap", "seed")}


def _categories_unusable(splits: dict, a: AnalysisConfig) -> str | None:
    """Why the category analysis cannot run on these splits (None: it can). Categories
    named in ``analysis.only_categories`` are not second-guessed: the stage checks them."""
    if not any(p.category for p in splits["harmful_train"]):
        return "the harmful prompts carry no category labels"
    if a.only_categories is not None:
        return None
    try:
        usable_groups(splits["harmful_train"], splits["harmful_test"], a)
    except RefusalScopeError as e:
        return str(e)
    return None


def _categories(ctx: Context, d, steer: Steering, key: tuple) -> CategoryResult:
    s, c = d.prompts.splits, ctx.cfg
    return ctx.cached(
        "categories",
        key,
        lambda: compute_categories(
            ctx.model,
            steer,
            d.attribution["train"],
            s["harmful_train"],
            s["harmful_test"],
            ctx.judge,
            c.evaluation,
            c.analysis,
        ),
        CategoryResult,
    )


def _jailbreaks(
    ctx: Context, d, steer: Steering, key: tuple, pairs: list[PromptPair], source: str
) -> JailbreakAnalysisResult:
    c = ctx.cfg
    ref = d.attribution["train"].ref_token
    return ctx.cached(
        "jailbreak_analysis",
        (*key, source, c.attribution, ref),
        lambda: compute_jailbreak_analysis(
            ctx.model,
            steer.saes,
            steer.direction,
            d.candidates.features,
            ref,
            pairs,
            ctx.judge,
            steer.k_star,
            c.attribution,
            c.evaluation,
            c.analysis,
        ),
        JailbreakAnalysisResult,
    )


def _probe_data(prompts, jb: JailbreakAnalysisResult | None) -> ProbeData:
    """Plain splits in distribution; the wrapped prompts, by verdict, out of it."""
    ins = prompts.instructions
    ood: dict[str, list[str]] = {}
    if jb is not None:
        for row in jb.rows:
            group = "successful" if row["judgement"] == "complied" else "failed"
            ood.setdefault(group, []).append(row["prompt"])
    return ProbeData(
        train=labelled(ins("harmful_train"), ins("harmless_train"), "train"),
        val=labelled(ins("harmful_val"), ins("harmless_val"), "validation"),
        test=labelled(ins("harmful_test"), ins("harmless_test"), "test"),
        ood=ood,
    )
