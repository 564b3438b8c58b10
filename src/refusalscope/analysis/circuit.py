"""Upstream → downstream: do the harm features drive the refusal features? (Yeo et al.
2025, §8, and Marks et al. 2024's feature edges.)

* **Relative drop** (the paper's number): on each harmful test prompt, its F* is split by
  the shared rule (``analysis.roles``) into harm and refusal features; the harm features
  are clamped (``f' = c·f``, the run's c) from their onset — first high-attribution
  position — to the end of the prompt, and the refusal features' activation over the last
  ``n`` prompt positions drops by ``1 − clamped / clean`` (authors: 0.45 on Gemma-2).
* **Edges** between the global F* latents, ``u`` at an earlier layer than ``d``:
  *predicted* ``Σ_t (∂a_d/∂h_u[t]) · W_dec[u] · Δf_u[t]`` — the gradient, at the clean run
  with SAE errors kept (the SAE-free form: no SAE in the forward pass), of ``d``'s mean
  activation over the prompt positions ``a_d`` with respect to the residual at ``u``'s
  layer, projected on ``u``'s decoder row, times ``u``'s counterfactual change — against
  *measured*: the change of ``a_d`` when ``u`` alone is patched to its counterfactual
  value (exact patching). Both are means over the prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..evaluation.patching import exact_effects, latent_values
from ..evaluation.ranking import mean_ci, spearman_rows
from ..runtime.files import read_json, write_json
from ..runtime.hooks import Capture
from ..runtime.model import ChatModel
from ..runtime.patching import EditLatents, per_row_latents
from ..runtime.saes import SAESet
from ..runtime.types import FeatureList, feature_list
from ..stages.attribution import AttributionConfig, AttributionResult, _Mix, cache_runs
from .activations import post_instruction_tokens
from .circuit_viewer import viewer_graph
from .config import AnalysisConfig
from .roles import PromptFeatures, label, plain_attribution, relative_drop, rule_text


@dataclass
class CircuitResult:
    """``table``: ``results.json["circuit"]``; ``graph``: ``circuit_graph.json`` (nodes and
    edges); ``viewer``: ``circuit_viewer.json``, the same graph for circuit-tracer's
    attribution-graph viewer (``analysis.circuit_viewer``)."""

    table: dict[str, Any]
    graph: dict[str, Any]
    viewer: dict[str, Any]

    FILE = "circuit.json"
    GRAPH = "circuit_graph.json"
    VIEWER = "circuit_viewer.json"

    def save(self, folder: Path) -> None:
        write_json(folder / self.FILE, self.table)
        write_json(folder / self.GRAPH, self.graph)
        write_json(folder / self.VIEWER, self.viewer)

    @classmethod
    def load(cls, folder: Path) -> CircuitResult:
        files = (cls.FILE, cls.GRAPH, cls.VIEWER)
        return cls(*(read_json(folder / f) for f in files))


def onset_clamp(
    saes: SAESet, sets: Sequence[FeatureList], onsets: Sequence[Tensor], where: Tensor, c: float
) -> EditLatents:
    """``f' = c·f`` for a batch: row ``b`` scales ``sets[b]``, latent ``j`` on the prompt
    positions (``where``) from ``onsets[b][j]`` positions before the end onwards."""
    latents, mask = per_row_latents(sets)
    B, T = where.shape
    on = {}
    for layer, idx in latents.items():
        start = torch.full(idx.shape, T, dtype=torch.long)  # masked slots: never
        for b, (s, o) in enumerate(zip(sets, onsets, strict=True)):
            for j, lat in enumerate(idx[b].tolist()):
                hit = ((s[:, 0] == layer) & (s[:, 1] == lat)).nonzero()
                if mask[layer][b, j] and len(hit):
                    start[b, j] = T - 1 - int(o[hit[0, 0]])
        pos = torch.arange(T)[None, :, None]
        on[layer] = (pos >= start[:, None, :]) & where.cpu()[:, :, None]
    return EditLatents(saes, latents, on, scale=c)


def end_means(
    saes: SAESet, cap: Capture, features: FeatureList, last_n: int, attention: Tensor
) -> Float[Tensor, "batch n"]:
    """Each feature's mean activation over the last ``last_n`` positions of a captured run."""
    end = torch.zeros_like(attention, dtype=torch.float32)
    end[:, -last_n:] = attention[:, -last_n:].float()
    out = torch.zeros(attention.shape[0], len(features))
    for layer in sorted(set(features[:, 0].tolist())):
        cols = (features[:, 0] == layer).nonzero()[:, 0]
        f = saes.encode(layer, cap.get(layer), features[cols, 1]).float()
        out[:, cols] = ((f * end[:, :, None]).sum(1) / end.sum(1, keepdim=True).clamp(min=1)).cpu()
    return out


@torch.no_grad()
def clamp_drops(
    model: ChatModel,
    saes: SAESet,
    prompts: Sequence[str],
    feats: PromptFeatures,
    c: float,
    last_n: int,
    batch_size: int,
) -> list[float | None]:
    """Per prompt, the refusal features' relative drop under the onset clamp of its harm
    features (None without harm or refusal features, or with silent refusal features)."""
    out: list[float | None] = [None] * len(prompts)
    for rows, tokens in model.batches(prompts, batch_size, "upstream clamp"):
        ok = [i for i in rows if feats.is_refusal[i].any() and (~feats.is_refusal[i]).any()]
        if not ok:
            continue
        tokens = model.tokenize([prompts[i] for i in ok]).to(model.device)
        harm = [feats.sets[i][~feats.is_refusal[i]] for i in ok]
        onsets = [feats.onset_from_end[i][~feats.is_refusal[i]] for i in ok]
        refusal = feature_list(sorted({tuple(f) for i in ok for f in feats.sets[i].tolist()}))
        layers = sorted(set(refusal[:, 0].tolist()))
        runs = []
        for ivs in ([], [onset_clamp(saes, harm, onsets, tokens.prompt_mask, c)]):
            cap = Capture(layers)
            model.forward(tokens, [cap, *ivs], last_only=True)
            runs.append(end_means(saes, cap, refusal, last_n, tokens.attention_mask))
        index = {tuple(f): j for j, f in enumerate(refusal.tolist())}
        for b, i in enumerate(ok):
            cols = [index[tuple(f)] for f in feats.sets[i][feats.is_refusal[i]].tolist()]
            out[i] = relative_drop(runs[0][b, cols], runs[1][b, cols])
    return out


def predicted_edges(
    model: ChatModel, saes: SAESet, ig, features: FeatureList, direction: Tensor
) -> Float[Tensor, "batch up down"]:
    """``[b, u, d]``: ``Σ_t (∂a_d/∂h_u[t]) · W_dec[u] · Δf_u[t]`` on each prompt, for ``u`` at an
    earlier layer than ``d`` (0 elsewhere); ``a_d`` is ``d``'s mean over the prompt positions."""
    k = len(features)
    layers = sorted(set(features[:, 0].tolist()))
    w = ig.tokens.prompt_mask.float()
    clean, patched = latent_values(saes, ig, features, direction)
    delta = (patched - clean) * w[:, :, None]
    rows = torch.stack([saes.decoder_rows(int(l), torch.tensor([int(i)]))[0] for l, i in features])
    out = torch.zeros(w.shape[0], k, k)
    with torch.enable_grad():
        mix = _Mix(ig.patch_in, 0.0, layers)  # α = 0: the clean run, residuals kept for autograd
        model.forward(ig.tokens, [mix], last_only=True)
        for d, (ld, i) in enumerate(features.tolist()):
            ups = [u for u in range(k) if features[u, 0] < ld]
            if not ups:
                continue
            f = saes.encode(ld, mix.outs[ld], torch.tensor([i]))[..., 0].float()
            a = (f * w).sum(1) / w.sum(1).clamp(min=1)
            up_layers = sorted({int(features[u, 0]) for u in ups})
            grads = torch.autograd.grad(
                a.sum(), [mix.outs[l] for l in up_layers], retain_graph=True
            )
            by_layer = dict(zip(up_layers, grads, strict=True))
            for u in ups:
                g = by_layer[int(features[u, 0])].float() @ rows[u].float().to(w.device)
                out[:, u, d] = (g * delta[:, :, u]).sum(1).cpu()
    return out


def measured_edges(
    model: ChatModel,
    saes: SAESet,
    ig,
    features: FeatureList,
    direction: Tensor,
    ref_token: int,
    rows_per_forward: int,
) -> tuple[Float[Tensor, "batch up down"], Float[Tensor, "batch k"]]:
    """``[b, u, d]``: the change of ``a_d`` when ``u`` alone is patched (exact), and each
    latent's exact effect on the metric."""
    effect, change = exact_effects(
        model, saes, ig, features, direction, ref_token, rows_per_forward, readout=features
    )
    assert change is not None
    return change, effect


def compute_circuit(
    model: ChatModel,
    saes: SAESet,
    direction: Tensor,
    attr: AttributionResult,
    prompts: Sequence[str],
    fstar: FeatureList,
    c: float,
    acfg: AttributionConfig,
    cfg: AnalysisConfig,
    batch_size: int = 32,
    rows_per_forward: int = 256,
) -> CircuitResult:
    """The relative drop on the harmful test ``prompts`` (rows of the test attribution
    ``attr``; per-prompt F* of size ``len(fstar)``) and the edges among the global ``fstar``."""
    direction = direction.to(model.device)
    fstar = feature_list(fstar)
    k, n_last = len(fstar), cfg.last_positions or post_instruction_tokens(model)
    pa = plain_attribution(
        model,
        saes,
        prompts,
        direction,
        attr.candidates,
        attr.ref_token,
        acfg,
        n_last,
        attr.jb_token,
    )
    feats = label(pa, attr.candidates, k)
    drops = clamp_drops(model, saes, prompts, feats, c, n_last, batch_size)
    used = [d for d in drops if d is not None]
    pred, meas, eff = torch.zeros(k, k), torch.zeros(k, k), torch.zeros(k)
    for rows, tokens in model.batches(prompts, acfg.batch_size, "feature edges"):
        ig = cache_runs(model, tokens, saes.layers, direction, attr.ref_token, attr.jb_token[rows])
        pred += predicted_edges(model, saes, ig, fstar, direction).sum(0)
        m, e = measured_edges(model, saes, ig, fstar, direction, attr.ref_token, rows_per_forward)
        meas, eff = meas + m.sum(0), eff + e.sum(0)
    n = len(prompts)
    pred, meas, eff = pred / n, meas / n, eff / n
    edges = _edges(fstar, pred, meas)
    ci = mean_ci(used, cfg.n_bootstrap, cfg.seed)
    table = {
        "rule": rule_text(n_last, pairs=False),
        "c": c,
        "k_star": k,
        "relative_drop": ci["mean"],
        "relative_drop_ci95": ci["ci95"],
        "n_prompts": len(used),
        "n_without_both_roles": len(drops) - len(used),
        "edges": edges,
        "edge_spearman": _edge_spearman(edges),
        "edge_sign_agreement": _sign_agreement(edges),
    }
    graph = {"nodes": _nodes(fstar, pa, feats, attr.candidates, eff), "edges": edges}
    slug, scan = "refusalscope-fstar-circuit", Path(model.name).name
    return CircuitResult(table, graph, viewer_graph(graph, model.n_layers, n, slug, scan))


def _edges(fstar: FeatureList, pred: Tensor, meas: Tensor) -> list[dict[str, Any]]:
    out = []
    for u, (lu, iu) in enumerate(fstar.tolist()):
        for d, (ld, idd) in enumerate(fstar.tolist()):
            if lu < ld:
                row = {"from": [lu, iu], "to": [ld, idd]}
                row |= {"predicted": round(float(pred[u, d]), 6)}
                out.append(row | {"measured": round(float(meas[u, d]), 6)})
    return out


def _edge_spearman(edges: list[dict]) -> float | None:
    p = np.array([[e["predicted"] for e in edges]])
    m = np.array([[e["measured"] for e in edges]])
    rho = spearman_rows(p, m)[0] if edges else math.nan
    return None if math.isnan(rho) else round(rho, 4)


def _sign_agreement(edges: list[dict]) -> float | None:
    """Share of the edges with a measured effect whose predicted sign is right."""
    real = [e for e in edges if abs(e["measured"]) > 1e-6]
    if not real:
        return None
    return round(sum((e["predicted"] > 0) == (e["measured"] > 0) for e in real) / len(real), 4)


def _nodes(fstar, pa, feats: PromptFeatures, candidates, effect) -> list[dict[str, Any]]:
    """Each global F* latent: its mean LA-IG, role (majority over the prompts whose F* holds
    it; else its mean end share) and mean exact effect."""
    index = {tuple(f): j for j, f in enumerate(candidates.tolist())}
    out = []
    for j, f in enumerate(map(tuple, fstar.tolist())):
        votes = [
            bool(r[(s == torch.tensor(f)).all(1)].any())
            for s, r in zip(feats.sets, feats.is_refusal, strict=True)
            if (s == torch.tensor(f)).all(1).any()
        ]
        col = index[f]
        share = float(pa.end_share[:, col].mean())
        refusal = sum(votes) * 2 >= len(votes) if votes else share >= 0.5
        out.append(
            {
                "layer": f[0],
                "latent": f[1],
                "laig": round(float(pa.score[:, col].mean()), 6),
                "role": "refusal" if refusal else "harm",
                "end_share": round(share, 4),
                "in_prompt_sets": len(votes),
                "exact_effect": round(float(effect[j]), 6),
            }
        )
    return out
