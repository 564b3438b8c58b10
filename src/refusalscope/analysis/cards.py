"""The pieces of a feature card that do not need the corpus: which methods picked the
feature, its decoder's logit lens and cosine to the refusal direction, its LA-IG
distribution and exact effect, the effect of clamping it alone, its Neuronpedia page."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..evaluation.ranking import mean_ci
from ..runtime.model import ChatModel
from ..runtime.patching import EditLatents, per_row_latents, positions
from ..runtime.saes import SAESet
from ..runtime.tokens import TokenBatch
from ..runtime.types import FeatureList
from ..stages.attribution import (
    AttributionConfig,
    AttributionResult,
    integrated_gradients,
    metric,
    position_scores,
)
from ..stages.features import FeatureSets
from .corpus import histogram

log = logging.getLogger(__name__)

Pair = tuple[int, int]
METHOD_NAMES = {"fstar": "F*", "cossim": "CosSim", "actdiff": "ActDiff", "ap": "AP"}


def card_id(layer: int, latent: int) -> str:
    """The anchor of a feature's card (``f-L5-893``): every report table links to it."""
    return f"f-L{layer}-{latent}"


def selected_features(
    features: FeatureSets, k: int, summary: Mapping[str, Any], circuit_nodes: Sequence[Mapping]
) -> dict[Pair, list[str]]:
    """Every feature some method or analysis selected, with why (in card order: global F*
    first, then the other methods' sets, the per-prompt F* union, the analyses' sets)."""
    picks: dict[Pair, list[str]] = {}

    def add(pair: Sequence[int], why: str) -> None:
        picks.setdefault((int(pair[0]), int(pair[1])), []).append(why)

    for method in ("fstar", "cossim", "actdiff", "ap"):
        if method in features.global_sets:
            for rank, pair in enumerate(features.global_set(method, k).tolist(), 1):
                add(pair, f"{METHOD_NAMES[method]} #{rank}")
    counts: dict[Pair, int] = {}
    prompt_sets = features.prompt_sets.get("fstar", {}).get("test", [])
    for s in prompt_sets:
        for pair in s[:k].tolist():
            counts[(pair[0], pair[1])] = counts.get((pair[0], pair[1]), 0) + 1
    for pair, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        add(pair, f"per-prompt F* on {n}/{len(prompt_sets)} test prompts")
    cats = summary.get("categories") or {}
    for pair in cats.get("common", []):
        add(pair, "harm categories: common to all")
    specific: dict[Pair, list[str]] = {}
    for cat, pairs in (cats.get("specific") or {}).items():
        for pair in pairs:
            specific.setdefault((int(pair[0]), int(pair[1])), []).append(cat)
    for pair, names in specific.items():
        add(pair, f"harm categories: specific to {', '.join(names)}")
    for pair in (summary.get("probes") or {}).get("features", []):
        add(pair, "OOD probe input")
    for node in circuit_nodes:
        add((node["layer"], node["latent"]), f"circuit: {node['role']} feature")
    return picks


def logit_lens(
    model: ChatModel, saes: SAESet, features: FeatureList, k: int
) -> list[dict[str, list]]:
    """Top and bottom ``k`` tokens of ``W_U · W_dec[i]`` per feature (no final norm, as
    Neuronpedia shows it)."""
    W_U = model.hf.get_output_embeddings().weight.detach().float().cpu()  # [vocab, d]
    tok = model.tokenizer

    def named(ids: Tensor, values: Tensor) -> list:
        return [[tok.decode([i]), round(float(v), 3)] for i, v in zip(ids, values, strict=True)]

    out = []
    for layer, latent in features.tolist():
        row = saes.decoder_rows(layer, torch.tensor([latent])).float().cpu()[0]
        logits = W_U @ row
        top, bottom = logits.topk(k), (-logits).topk(k)
        out.append(
            {"top": named(top.indices, top.values), "bottom": named(bottom.indices, -bottom.values)}
        )
    return out


def direction_cosines(saes: SAESet, features: FeatureList, direction: Tensor) -> list[float]:
    """Cosine of each feature's decoder row with the refusal direction r̂ (the one direction
    of layer l* the method uses at every layer, as CosSim and the candidates do)."""
    out = []
    r = direction.float().cpu()
    for layer, latent in features.tolist():
        row = saes.decoder_rows(layer, torch.tensor([latent])).float().cpu()[0]
        cos = row @ r / (row.norm().clamp(min=1e-12) * r.norm().clamp(min=1e-12))
        out.append(round(float(cos), 4))
    return out


def laig_stats(attr: AttributionResult, features: FeatureList, bins: int) -> list[dict | None]:
    """Each candidate feature's LA-IG score over the test prompts: mean, quantiles and a
    histogram (None for features outside the candidate pool, e.g. AP's)."""
    col = {tuple(p): j for j, p in enumerate(attr.candidates.tolist())}
    out: list[dict | None] = []
    for pair in features.tolist():
        j = col.get(tuple(pair))
        if j is None:
            out.append(None)
            continue
        s = attr.score[:, j].float()
        q = torch.quantile(s, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
        out.append(
            {
                "mean": round(float(s.mean()), 5),
                "quantiles": [round(float(v), 5) for v in q],
                "histogram": histogram(s, bins, low=float(s.min())),
                "n": len(s),
            }
        )
    return out


def exact_stats(
    tensors: Mapping[str, Tensor] | None, features: FeatureList, n_bootstrap: int, seed: int
) -> list[dict | None]:
    """Mean exact Δm over the test prompts (bootstrap interval) where the faithfulness
    stage patched the feature; None elsewhere."""
    if tensors is None:
        return [None] * len(features)
    col = {tuple(p): j for j, p in enumerate(tensors["candidates"].tolist())}
    effect = tensors["exact_effect"].float()
    out: list[dict | None] = []
    for pair in features.tolist():
        j = col.get(tuple(pair))
        out.append(None if j is None else mean_ci(effect[:, j].tolist(), n_bootstrap, seed))
    return out


@torch.no_grad()
def clamp_alone(
    model: ChatModel,
    saes: SAESet,
    tokens: TokenBatch,
    jb_token: Tensor,
    ref_token: int,
    features: FeatureList,
    c: float,
    rows_per_forward: int,
) -> Tensor:
    """``Δm [prompt, feat]``: the metric's change when only that feature is clamped to
    ``c × f`` at the prompt positions (prefill), one patched row per (prompt, feature)."""
    tokens = tokens.to(model.device)
    clean = metric(model.forward(tokens, last_only=True), jb_token, ref_token).cpu()
    P, F = tokens.input_ids.shape[0], len(features)
    pairs = torch.cartesian_prod(torch.arange(P), torch.arange(F))
    out = torch.zeros(P, F)
    for chunk in pairs.split(rows_per_forward):
        b, j = chunk[:, 0], chunk[:, 1]
        latents, mask = per_row_latents([features[int(i)][None] for i in j])
        where = tokens.prompt_mask[b.to(tokens.prompt_mask.device)]
        on = {l: positions(m.to(where.device), where) for l, m in mask.items()}
        rows = TokenBatch(tokens.input_ids[b], tokens.attention_mask[b], where)
        m = metric(
            model.forward(rows, [EditLatents(saes, latents, on, None, c)], last_only=True),
            jb_token[b.to(jb_token.device)],
            ref_token,
        ).cpu()
        out[b, j] = m - clean[b]
    return out


def neuronpedia_links(sources: Mapping[int, str], features: FeatureList) -> list[str | None]:
    """Neuronpedia pages of features whose SAE came from a sae_lens release with a
    Neuronpedia id in its registry entry (read from sae_lens); None for local SAEs."""
    ids = {layer: _neuronpedia_id(src) for layer, src in sources.items()}
    return [
        f"https://www.neuronpedia.org/{ids[l]}/{i}" if ids.get(l) else None
        for l, i in features.tolist()
    ]


def _neuronpedia_id(source: str) -> str | None:
    """``release:sae_id`` -> the registry's Neuronpedia id (None: local or not listed)."""
    if ":" not in source or Path(source).exists():
        return None
    release, sae_id = source.split(":", 1)
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        entry = get_pretrained_saes_directory().get(release)
    except Exception as e:  # an optional link must not fail the run
        log.warning("could not read sae_lens's registry for Neuronpedia ids: %s", e)
        return None
    if entry is None or not entry.neuronpedia_id:
        return None
    return entry.neuronpedia_id.get(sae_id)


def token_attribution(
    model: ChatModel,
    saes: SAESet,
    prompts: Sequence[str],
    jb_token: Tensor,
    features: FeatureList,
    direction: Tensor,
    ref_token: int,
    acfg: AttributionConfig,
) -> list[dict[str, Any]]:
    """LA-IG of ``features`` at every token of a few prompts (the report's token heat
    maps): ``{"prompt", "tokens", "in_prompt", "features", "attribution" [token][feat]}``."""
    if not prompts or not len(features):
        return []
    tokens = model.tokenize(list(prompts)).to(model.device)
    layers = sorted(set(features[:, 0].tolist()))
    d = direction.to(model.device)
    ig = integrated_gradients(model, tokens, layers, d, ref_token, acfg, jb_token.to(model.device))
    B, T = tokens.input_ids.shape
    A = torch.zeros(B, T, len(features))
    with torch.no_grad():
        for layer in layers:
            cols = (features[:, 0] == layer).nonzero()[:, 0]
            A[:, :, cols] = position_scores(saes, ig, layer, features[cols, 1], d).detach().cpu()
    out = []
    for b, text in enumerate(prompts):
        real = tokens.attention_mask[b].bool().cpu()
        out.append(
            {
                "prompt": text,
                "tokens": [model.tokenizer.decode([t]) for t in tokens.input_ids[b].cpu()[real]],
                "in_prompt": tokens.prompt_mask[b].cpu()[real].tolist(),
                "features": features.tolist(),
                "attribution": [[round(float(v), 5) for v in row] for row in A[b][real]],
            }
        )
    return out
