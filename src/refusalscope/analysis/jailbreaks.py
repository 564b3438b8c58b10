"""Jailbreak prompts: which refusal features a jailbreak wrapper suppresses.

Each pair is a plain harmful request and the same request inside a jailbreak. The
unmodified model's answer to the wrapped version (judged) puts the pair in the
``successful`` or ``failed`` group. F* is computed on the plain version (LA-IG, top-K*),
and each of its features is labelled by where in the prompt its attribution lies:

    RULE (``analysis.roles``, shared with the upstream → downstream circuit): a
    feature of a prompt's F* is a *refusal* (downstream) feature when at least half of
    its absolute LA-IG attribution on that prompt lies on the last ``n`` prompt
    positions (the tokens the chat template adds after the user's text by default: 5 on
    Gemma-2), and a *harm* (upstream) feature otherwise.

The measurement is the relative drop of each group's summed activation in the wrapped
version: harm features as the mean over the prompt's positions, refusal features as the
mean over the last ``n`` positions; ``1 − wrapped / plain`` per pair, averaged over pairs.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from ..data.pairs import PromptPair
from ..evaluation.config import EvalConfig
from ..evaluation.generate import EvalResult, generate_and_judge
from ..evaluation.stats import bootstrap_diff_ci, bootstrap_mean_ci
from ..judges import Judge
from ..runtime.errors import RefusalScopeError
from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from ..runtime.types import FeatureList, feature_list
from ..stages.attribution import AttributionConfig
from .activations import FeatureActivations, feature_activations, post_instruction_tokens
from .config import AnalysisConfig
from .roles import PromptFeatures, label, plain_attribution, relative_drop, rule_text

log = logging.getLogger(__name__)

TOP_FEATURES = 10
"""Features (most often in the plain prompts' F*) given one by one."""


class JailbreakAnalysisResult(EvalResult):
    """``table``: ``results.json["jailbreak_analysis"]``; ``rows``: the unmodified model's
    judged answers to the wrapped prompts."""


def select_pairs(pairs: Sequence[PromptPair], cfg: AnalysisConfig) -> list[PromptPair]:
    """At most ``max_pairs`` pairs (a seeded sample, in file order)."""
    if len(pairs) < 2:
        raise RefusalScopeError(
            f"the jailbreak analysis needs at least 2 (plain, adversarial) pairs; got {len(pairs)}"
        )
    if len(pairs) <= cfg.max_pairs:
        return list(pairs)
    keep = sorted(random.Random(cfg.seed).sample(range(len(pairs)), cfg.max_pairs))
    return [pairs[i] for i in keep]


def pair_drops(
    feats: PromptFeatures, plain_of: list[int], plain: FeatureActivations, adv: FeatureActivations
) -> list[dict]:
    """Per pair: the harm and refusal drops (None when the group is empty or silent)."""
    out = []
    for i, u in enumerate(plain_of):
        cols = torch.tensor(plain.columns(feats.sets[u]))
        ref = feats.is_refusal[u]
        harm_c, ref_c = cols[~ref], cols[ref]
        out.append(
            {
                "harm_drop": relative_drop(plain.mean[u, harm_c], adv.mean[i, harm_c]),
                "refusal_drop": relative_drop(plain.end[u, ref_c], adv.end[i, ref_c]),
                "n_harm": int((~ref).sum()),
                "n_refusal": int(ref.sum()),
            }
        )
    return out


def group_table(drops: list[dict], members: list[int], cfg: AnalysisConfig) -> dict:
    out: dict = {"n": len(members)}
    for what in ("harm_drop", "refusal_drop"):
        vals = [drops[i][what] for i in members if drops[i][what] is not None]
        low, high = bootstrap_mean_ci(vals, cfg.n_bootstrap, cfg.seed)
        out[what] = round(sum(vals) / len(vals), 4) if vals else None
        out[f"{what}_ci95"] = [round(low, 4), round(high, 4)] if vals else None
        out[f"n_{what}"] = len(vals)
    return out


def difference(drops: list[dict], a: list[int], b: list[int], cfg: AnalysisConfig) -> dict:
    """``a − b`` of each drop, with a bootstrap interval (groups resampled separately)."""
    out = {}
    for what in ("harm_drop", "refusal_drop"):
        va = [drops[i][what] for i in a if drops[i][what] is not None]
        vb = [drops[i][what] for i in b if drops[i][what] is not None]
        if not va or not vb:
            out[what], out[f"{what}_ci95"] = None, None
            continue
        low, high = bootstrap_diff_ci(va, vb, cfg.n_bootstrap, cfg.seed)
        out[what] = round(sum(va) / len(va) - sum(vb) / len(vb), 4)
        out[f"{what}_ci95"] = [round(low, 4), round(high, 4)]
    return out


def feature_table(
    feats: PromptFeatures,
    plain_of: list[int],
    plain: FeatureActivations,
    adv: FeatureActivations,
    groups: dict[str, list[int]],
) -> list[dict]:
    """The features most often in the plain prompts' F*, each with its drop per group."""
    counts: Counter = Counter()
    refusal_votes: Counter = Counter()
    for s, r in zip(feats.sets, feats.is_refusal, strict=True):
        for f, is_ref in zip(map(tuple, s.tolist()), r.tolist(), strict=True):
            counts[f] += 1
            refusal_votes[f] += is_ref
    out = []
    for f, n in counts.most_common(TOP_FEATURES):
        label = "refusal" if refusal_votes[f] * 2 >= n else "harm"
        col = plain.columns(feature_list([f]))[0]
        acts_p, acts_a = (plain.end, adv.end) if label == "refusal" else (plain.mean, adv.mean)
        row = {"feature": list(f), "label": label, "count": n}
        for g, members in groups.items():
            drops = [
                relative_drop(acts_p[plain_of[i], col], acts_a[i, col])
                for i in members
                if f in {tuple(x) for x in feats.sets[plain_of[i]].tolist()}
            ]
            drops = [d for d in drops if d is not None]
            row[g] = round(sum(drops) / len(drops), 4) if drops else None
        out.append(row)
    return out


def compute_jailbreak_analysis(
    model: ChatModel,
    saes: SAESet,
    direction: Tensor,
    candidates: FeatureList,
    ref_token: int,
    pairs: Sequence[PromptPair],
    judge: Judge,
    k_star: int,
    acfg: AttributionConfig,
    ev: EvalConfig,
    cfg: AnalysisConfig,
) -> JailbreakAnalysisResult:
    """Group the pairs by the unmodified model's verdict and measure the drops."""
    pairs = select_pairs(pairs, cfg)
    judged = generate_and_judge(
        model,
        [p.adversarial for p in pairs],
        [],
        judge,
        ev,
        {"eval": "jailbreak_pairs", "method": "base"},
        desc="wrapped prompts",
    )
    for row, p in zip(judged.rows, pairs, strict=True):
        row["plain"], row["kind"] = p.plain.instruction, p.kind
    plains = list(dict.fromkeys(p.plain.instruction for p in pairs))
    plain_of = [plains.index(p.plain.instruction) for p in pairs]
    n = cfg.last_positions or post_instruction_tokens(model)
    attr = plain_attribution(model, saes, plains, direction, candidates, ref_token, acfg, n)
    feats = label(attr, candidates, k_star)
    union = feature_list(sorted({tuple(f) for s in feats.sets for f in s.tolist()}))
    plain_acts = feature_activations(model, saes, plains, union, n, ev.batch_size)
    advs = [p.adversarial.instruction for p in pairs]
    adv_acts = feature_activations(model, saes, advs, union, n, ev.batch_size)
    drops = pair_drops(feats, plain_of, plain_acts, adv_acts)
    success = [r["judgement"] == "complied" for r in judged.rows]
    groups = {
        "successful": [i for i, s in enumerate(success) if s],
        "failed": [i for i, s in enumerate(success) if not s],
    }
    for kind in sorted({p.kind for p in pairs if p.kind is not None}):
        groups[f"wrapper:{kind}"] = [i for i, p in enumerate(pairs) if p.kind == kind]
    labels = torch.cat(feats.is_refusal)
    table = {
        "rule": rule_text(n),
        "k_star": k_star,
        "n_pairs": len(pairs),
        "labelled": {"refusal": int(labels.sum()), "harm": int((~labels).sum())},
        "groups": {g: group_table(drops, m, cfg) for g, m in groups.items()},
        "difference": difference(drops, groups["successful"], groups["failed"], cfg),
        "features": feature_table(feats, plain_of, plain_acts, adv_acts, groups),
    }
    for row, d in zip(judged.rows, drops, strict=True):
        row.update(d)
    return JailbreakAnalysisResult(table, judged.rows)
