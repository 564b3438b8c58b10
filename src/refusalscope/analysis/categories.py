"""Harm categories: which refusal features all categories share, which are their own.

Per category, F* is the top-K* candidates by the mean LA-IG score over that category's
harmful train prompts. ``common`` is the intersection over categories (read as refusal
features), ``specific[c]`` the rest of category c's set, truncated to one common size (read
as harm features of that category). Then, on each category's harmful test prompts:

* (a) clamp ``specific[c]`` with the common latents pinned to their clean values at every
  prompt position (so the clamp cannot act through them); (b) clamp the common set with
  ``specific[c]`` pinned; (c) clamp both. Rates are normalised by (c).
* transfer: clamp ``specific[from]`` (common pinned) on category ``to``'s prompts; the
  diagonal is (a). A category-specific path shows as a diagonal above the off-diagonal.
* selectivity of each specific feature: its activation (max over the prompt's positions)
  averaged over its own category's train prompts, divided by the same over the others'.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from ..evaluation.config import EvalConfig
from ..evaluation.generate import EvalResult, generate_and_judge
from ..evaluation.stats import bootstrap_mean_ci, wilson_interval
from ..evaluation.steering import Steering
from ..judges import Judge
from ..runtime.errors import RefusalScopeError
from ..runtime.hooks import Intervention
from ..runtime.interventions import ScaleFeatures
from ..runtime.model import ChatModel
from ..runtime.pinning import PinFeatures, clean_latent_values
from ..runtime.types import FeatureList, Prompt, feature_list
from ..stages.attribution import AttributionResult
from ..stages.features import global_top
from .activations import feature_activations
from .config import AnalysisConfig

log = logging.getLogger(__name__)


class CategoryResult(EvalResult):
    """``table``: ``results.json["categories"]``; ``rows``: every judged generation."""


@dataclass
class CategorySets:
    """Per-category F*, the common features and each category's specific ones."""

    per_category: dict[str, FeatureList]
    common: FeatureList
    specific: dict[str, FeatureList]


def group_by_category(
    prompts: Sequence[Prompt], cfg: AnalysisConfig, what: str
) -> dict[str, list[int]]:
    """category -> indices of its prompts; categories below the minimum are left out
    (with a warning), unless named in ``only_categories`` (then an error)."""
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        if p.category is not None:
            groups.setdefault(p.category, []).append(i)
    if cfg.only_categories is not None:
        unknown = sorted(set(cfg.only_categories) - set(groups))
        if unknown:
            raise RefusalScopeError(
                f"analysis.only_categories names {unknown}, which no {what} prompt has; the "
                f"categories present are {sorted(groups)}"
            )
        groups = {c: groups[c] for c in cfg.only_categories}
    small = {c: len(v) for c, v in groups.items() if len(v) < cfg.min_category_prompts}
    if small and cfg.only_categories is not None:
        raise RefusalScopeError(
            f"too few {what} prompts in categories {small} (need analysis.min_category_prompts "
            f"= {cfg.min_category_prompts} each); add prompts, lower the minimum or leave "
            "these out of analysis.only_categories"
        )
    if small:
        log.warning("categories with too few %s prompts left out: %s", what, small)
    return {c: v for c, v in sorted(groups.items()) if c not in small}


def category_sets(attr: AttributionResult, groups: dict[str, list[int]], k: int) -> CategorySets:
    """F* per category (same K*), their intersection and the truncated remainders."""
    per_cat = {c: global_top(attr.score[rows], attr.candidates, k)[0] for c, rows in groups.items()}
    as_sets = {c: {tuple(f) for f in s.tolist()} for c, s in per_cat.items()}
    shared = set.intersection(*as_sets.values())
    mean_score = {
        tuple(f): float(v)
        for f, v in zip(attr.candidates.tolist(), attr.score.mean(0).tolist(), strict=True)
    }
    common = sorted(shared, key=lambda f: -mean_score[f])
    rest = {c: [f for f in s.tolist() if tuple(f) not in shared] for c, s in per_cat.items()}
    size = min(len(r) for r in rest.values())
    return CategorySets(
        per_cat,
        feature_list(common),
        {c: feature_list(r[:size]) for c, r in rest.items()},
    )


def jaccard(a: FeatureList, b: FeatureList) -> float:
    sa, sb = {tuple(f) for f in a.tolist()}, {tuple(f) for f in b.tolist()}
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def selectivity(
    model: ChatModel,
    saes,
    prompts: Sequence[str],
    groups: dict[str, list[int]],
    specific: dict[str, FeatureList],
    batch_size: int,
) -> dict[str, list[float | None]]:
    """Per category, each specific feature's own-category / other-category activation
    (``ratio``: capped, None when it is zero on both)."""
    union = feature_list(sorted({tuple(f) for s in specific.values() for f in s.tolist()}))
    if len(union) == 0:
        return {c: [] for c in specific}
    measured = feature_activations(model, saes, prompts, union, batch_size=batch_size)
    acts = measured.max
    out: dict[str, list[float | None]] = {}
    for c, feats in specific.items():
        cols = measured.columns(feats)
        own = acts[groups[c]][:, cols].mean(0)
        others = [i for o, rows in groups.items() if o != c for i in rows]
        rest = acts[others][:, cols].mean(0)
        out[c] = [ratio(o, r) for o, r in zip(own.tolist(), rest.tolist(), strict=True)]
    return out


MAX_RATIO = 1000.0
"""Selectivity reported for a feature that never fires on the other categories."""


def ratio(own: float, others: float) -> float | None:
    """``own / others``, capped at ``MAX_RATIO``; None when the feature is silent on both."""
    if own <= 0 and others <= 0:
        return None
    return round(min(own / others, MAX_RATIO) if others > 0 else MAX_RATIO, 4)


@dataclass
class _Clamps:
    """What the category jailbreaks need: the clamp settings and the pinned values."""

    model: ChatModel
    steer: Steering
    judge: Judge
    ev: EvalConfig

    def scale(self, feats: FeatureList) -> list[Intervention]:
        if len(feats) == 0:
            return []
        st = self.steer
        return [ScaleFeatures(st.saes, feats, positions=st.positions, c=st.c)]

    def pin(self, feats: FeatureList, prompts: Sequence[Prompt]) -> list[Intervention]:
        if len(feats) == 0:
            return []
        values = clean_latent_values(
            self.model, self.steer.saes, feats, [p.instruction for p in prompts], self.ev.batch_size
        )
        return [PinFeatures(self.steer.saes, feats, values)]

    def run(self, prompts: Sequence[Prompt], ivs: list[Intervention], tag: dict) -> list[dict]:
        judged = generate_and_judge(self.model, prompts, ivs, self.judge, self.ev, tag)
        return judged.rows


def _rate(rows: list[dict]) -> dict:
    n, k = len(rows), sum(r["judgement"] == "complied" for r in rows)
    low, high = wilson_interval(k, n)
    return {"n": n, "complied": k / n if n else None, "ci95": [round(low, 4), round(high, 4)]}


def category_jailbreaks(
    clamps: _Clamps, test: Sequence[Prompt], groups: dict[str, list[int]], sets: CategorySets
) -> tuple[dict, list[dict]]:
    """The (a)/(b)/(c) jailbreaks per category and the transfer matrix, with the rows.

    Long because the three clamps and the transfer share one set of pinned values."""
    rows: list[dict] = []
    cats = list(groups)
    every = [i for c in cats for i in groups[c]]
    prompts = [test[i] for i in every]
    pin_common = clamps.pin(sets.common, prompts)
    by_to: dict[str, dict[str, list[dict]]] = {}
    for src in cats:
        ivs = clamps.scale(sets.specific[src]) + pin_common
        got = clamps.run(
            prompts,
            ivs,
            {"eval": "categories", "method": "specific", "clamp": "specific", "from": src},
        )
        for row, i in zip(got, every, strict=True):
            row["category"] = test[i].category
            by_to.setdefault(test[i].category, {}).setdefault(src, []).append(row)
        rows += got
    raw: dict[str, dict] = {}
    for c in cats:
        mine = [test[i] for i in groups[c]]
        both = feature_list(sets.common.tolist() + sets.specific[c].tolist())
        common_rows = []
        if len(sets.common):
            ivs = clamps.scale(sets.common) + clamps.pin(sets.specific[c], mine)
            common_rows = clamps.run(
                mine, ivs, {"eval": "categories", "method": "common", "clamp": "common", "to": c}
            )
        tag = {"eval": "categories", "method": "all", "clamp": "all", "to": c}
        all_rows = clamps.run(mine, clamps.scale(both), tag)
        rows += common_rows + all_rows
        raw[c] = {
            "specific": _rate(by_to[c][c]),
            "common": _rate(common_rows),
            "all": _rate(all_rows),
        }
    transfer = {s: {t: _rate(by_to[t][s]) for t in cats} for s in cats}
    return {"raw": raw, "transfer": transfer, "by_to": by_to}, rows


def _normalised(raw: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    out = {}
    for c, r in raw.items():
        base = r["all"]["complied"]
        out[c] = {
            k: (None if not base or r[k]["complied"] is None else round(r[k]["complied"] / base, 4))
            for k in ("specific", "common", "all")
        }
    return out


def diagonal_check(by_to: dict[str, dict[str, list[dict]]], cfg: AnalysisConfig) -> dict:
    """Per test prompt: complied under its own category's specific clamp minus the mean
    under the other categories' (paired over prompts), with a bootstrap interval."""
    diffs, diag, off = [], [], []
    for to, by_src in by_to.items():
        others = [s for s in by_src if s != to]
        for j, row in enumerate(by_src[to]):
            own = float(row["judgement"] == "complied")
            rest = [float(by_src[s][j]["judgement"] == "complied") for s in others]
            diag.append(own)
            if rest:
                off.append(sum(rest) / len(rest))
                diffs.append(own - off[-1])
    low, high = bootstrap_mean_ci(diffs, cfg.n_bootstrap, cfg.seed)
    mean = lambda v: round(sum(v) / len(v), 4) if v else None  # noqa: E731
    return {
        "diagonal": mean(diag),
        "off_diagonal": mean(off),
        "difference": mean(diffs),
        "difference_ci95": [round(low, 4), round(high, 4)],
        "n_prompts": len(diffs),
    }


def usable_groups(
    train: Sequence[Prompt], test: Sequence[Prompt], cfg: AnalysisConfig
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Train and test prompt indices of the categories with enough of both (at least 2)."""
    groups = group_by_category(train, cfg, "harmful train")
    test_groups = group_by_category(test, cfg, "harmful test")
    cats = sorted(set(groups) & set(test_groups))
    if len(cats) < 2:
        counts = {c: (len(groups.get(c, [])), len(test_groups.get(c, []))) for c in cats}
        raise RefusalScopeError(
            "the category analysis needs at least 2 categories with "
            f"{cfg.min_category_prompts}+ harmful train and test prompts each; usable: "
            f"{counts or 'none'} (train, test). Label more prompts with a category or lower "
            "analysis.min_category_prompts"
        )
    groups = {c: groups[c] for c in cats}
    test_groups = {c: test_groups[c] for c in cats}
    return groups, test_groups


def compute_categories(
    model: ChatModel,
    steer: Steering,
    attr: AttributionResult,
    train: Sequence[Prompt],
    test: Sequence[Prompt],
    judge: Judge,
    ev: EvalConfig,
    cfg: AnalysisConfig,
) -> CategoryResult:
    """The harm-category analysis (``attr``: LA-IG of the harmful ``train`` prompts, in order)."""
    if len(train) != attr.score.shape[0]:
        raise RefusalScopeError(
            f"{len(train)} train prompts but LA-IG scores for {attr.score.shape[0]}; pass the "
            "prompts the attribution was computed on"
        )
    groups, test_groups = usable_groups(train, test, cfg)
    cats = list(groups)
    k = cfg.category_k_star or steer.k_star
    if k > len(attr.candidates):
        raise RefusalScopeError(
            f"analysis.category_k_star = {k} is larger than the candidate pool "
            f"({len(attr.candidates)}); lower it or raise candidates.k_per_layer"
        )
    sets = category_sets(attr, groups, k)
    log.info(
        "categories: %d common features, %d specific each",
        len(sets.common),
        len(sets.specific[cats[0]]),
    )
    jb, rows = category_jailbreaks(_Clamps(model, steer, judge, ev), test, test_groups, sets)
    instructions = [p.instruction for p in train]
    sel = selectivity(model, steer.saes, instructions, groups, sets.specific, ev.batch_size)
    table = {
        "k_star": k,
        "categories": cats,
        "n_train": {c: len(groups[c]) for c in cats},
        "n_test": {c: len(test_groups[c]) for c in cats},
        "per_category": {c: s.tolist() for c, s in sets.per_category.items()},
        "common": sets.common.tolist(),
        "specific": {c: s.tolist() for c, s in sets.specific.items()},
        "overlap": {
            a: {b: round(jaccard(sets.per_category[a], sets.per_category[b]), 4) for b in cats}
            for a in cats
        },
        "jailbreak": _normalised(jb["raw"]),
        "jailbreak_raw": jb["raw"],
        "transfer": _matrix(jb["transfer"], "complied"),
        "transfer_ci95": _matrix(jb["transfer"], "ci95"),
        "selectivity": sel,
        "checks": _checks(sets, sel, jb["by_to"], steer, cfg),
    }
    return CategoryResult(table, rows)


def _matrix(transfer: dict[str, dict[str, dict]], field: str) -> dict[str, dict]:
    return {src: {to: v[field] for to, v in row.items()} for src, row in transfer.items()}


def _share(part: set, whole: set) -> float | None:
    return round(len(part & whole) / len(whole), 4) if whole else None


def _checks(sets: CategorySets, sel: dict, by_to: dict, steer: Steering, cfg: AnalysisConfig):
    """What a category-specific path would show: selective specific features, a transfer
    diagonal above the off-diagonal, and ``common`` inside the global F*."""
    ratios = [r for v in sel.values() for r in v if r is not None]
    glob = {tuple(f) for f in steer.features.global_set("fstar", steer.k_star).tolist()}
    common = {tuple(f) for f in sets.common.tolist()}
    return {
        "selective_fraction": round(sum(r > 1 for r in ratios) / len(ratios), 4)
        if ratios
        else None,
        "transfer_diagonal": diagonal_check(by_to, cfg),
        "common_in_global_fstar": _share(glob, common),
        "global_fstar_in_common": _share(common, glob),
    }
