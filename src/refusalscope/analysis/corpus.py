"""Feature activations over a corpus: top-activating contexts, density, histogram and the
per-item maxima the ground-truth labels are read from.

A corpus is a list of token sequences (``CorpusItem``): the run's prompts as the model sees
them (chat-formatted), the base model's own responses after their prompts, and plain text.
One streaming pass encodes only the selected latents and keeps, per feature, its non-zero
values and each item's maximum; a second pass over the few items that made some feature's
top list reads the activations around the peak.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..runtime.hooks import Capture
from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from ..runtime.tokens import TokenBatch
from ..runtime.types import FeatureList, Prompt


@dataclass(frozen=True)
class CorpusItem:
    """One token sequence of the corpus."""

    ids: list[int]
    source: str
    """``prompts``, ``responses`` or ``text``."""
    scored: list[bool]
    """Positions the item's labels refer to (the prompt text, or the response)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Ground truth about the item: ``category``, ``harmful``, ``wrapper``, ``response``."""
    own: list[bool] | None = None
    """Positions that count for density and top contexts (None: all but BOS); a response
    item's prompt prefix repeats a prompt item, so only its response is its own."""


def prompt_labels(p: Prompt) -> dict[str, str]:
    """The labels of a prompt the cards' ground truth is read against."""
    out = {}
    if p.category:
        out["category"] = p.category
    if p.harmful is not None:
        out["harmful"] = "harmful" if p.harmful else "harmless"
    if p.meta.get("wrapper"):
        out["wrapper"] = str(p.meta["wrapper"])
    return out


def prompt_items(model: ChatModel, prompts: Sequence[Prompt], max_tokens: int) -> list[CorpusItem]:
    """The prompts chat-formatted, as every stage feeds them to the model."""
    out = []
    for start in range(0, len(prompts), 64):
        chunk = prompts[start : start + 64]
        tokens = model.tokenize([p.instruction for p in chunk])
        for p, ids, keep, in_prompt in zip(
            chunk, tokens.input_ids, tokens.attention_mask, tokens.prompt_mask, strict=True
        ):
            real = keep.bool()
            out.append(
                CorpusItem(
                    ids[real].tolist()[:max_tokens],
                    "prompts",
                    in_prompt[real].tolist()[:max_tokens],
                    prompt_labels(p),
                )
            )
    return out


def response_items(
    model: ChatModel, rows: Sequence[Mapping[str, Any]], max_tokens: int
) -> list[CorpusItem]:
    """Judged generations (``prompt``, ``response``, ``judgement``) after their prompts;
    the response's tokens are the scored ones, labelled by the judgement."""
    out = []
    for row in rows:
        if not row["response"].strip():
            continue
        prompt = model.tokenize([row["prompt"]])
        p_ids = prompt.input_ids[0][prompt.attention_mask[0].bool()].tolist()
        r_ids = model.tokenizer(row["response"], add_special_tokens=False)["input_ids"]
        ids = (p_ids + list(r_ids))[:max_tokens]
        scored = ([False] * len(p_ids) + [True] * len(r_ids))[:max_tokens]
        labels = {"response": row["judgement"]}
        out.append(CorpusItem(ids, "responses", scored, labels, own=scored))
    return out


def text_items(model: ChatModel, texts: Iterable[str], max_tokens: int) -> list[CorpusItem]:
    """Plain passages (truncated to ``max_tokens``), BOS first where the model expects it."""
    out = []
    tok = model.tokenizer
    for text in texts:
        if not text.strip():
            continue
        ids = tok(text, add_special_tokens=True, truncation=True, max_length=max_tokens)
        ids = list(ids["input_ids"])
        out.append(CorpusItem(ids, "text", [i != tok.bos_token_id for i in ids]))
    return out


@dataclass
class CorpusScan:
    """What one pass over the corpus keeps per selected feature (columns of ``features``)."""

    n_tokens: int
    nonzero: list[Tensor]
    """Per feature: its non-zero activations over every corpus token."""
    item_max: Float[Tensor, "item feat"]
    """Each item's maximum activation over its tokens (BOS and padding excluded)."""
    scored_max: Float[Tensor, "item feat"]
    """Each item's maximum over its scored positions (the label's positions)."""


def _batches(items: Sequence[CorpusItem], batch_size: int) -> Iterable[list[int]]:
    order = sorted(range(len(items)), key=lambda i: len(items[i].ids))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _encode_rows(
    model: ChatModel, saes: SAESet, items: Sequence[CorpusItem], features: FeatureList
) -> tuple[Float[Tensor, "batch seq feat"], TokenBatch, Tensor]:
    """The selected latents at every own position of a batch of items (0 elsewhere;
    padding left), the tokens, and the own-position mask."""
    tokens = TokenBatch.collate(
        [it.ids for it in items], [it.scored for it in items], model.pad_id
    ).to(model.device)
    own = TokenBatch.collate(
        [it.ids for it in items], [it.own or [True] * len(it.ids) for it in items], 0
    ).prompt_mask
    layers = sorted(set(features[:, 0].tolist()))
    cap = Capture(layers)
    model.forward(tokens, [cap], last_only=True)
    B, T = tokens.input_ids.shape
    acts = torch.zeros(B, T, len(features))
    for layer in layers:
        cols = (features[:, 0] == layer).nonzero()[:, 0]
        acts[:, :, cols] = saes.encode(layer, cap.get(layer), features[cols, 1]).float().cpu()
    valid = tokens.attention_mask.bool().cpu() & own
    bos = model.tokenizer.bos_token_id
    if bos is not None:
        valid &= tokens.input_ids.cpu() != bos
    return acts * valid[:, :, None], tokens, valid


@torch.no_grad()
def scan_corpus(
    model: ChatModel,
    saes: SAESet,
    items: Sequence[CorpusItem],
    features: FeatureList,
    batch_size: int = 32,
) -> CorpusScan:
    """One pass: non-zero values, per-item maxima (all tokens and scored tokens)."""
    n = len(features)
    item_max = torch.zeros(len(items), n)
    scored_max = torch.zeros(len(items), n)
    nonzero: list[list[Tensor]] = [[] for _ in range(n)]
    n_tokens = 0
    for rows in _batches(items, batch_size):
        acts, tokens, valid = _encode_rows(model, saes, [items[i] for i in rows], features)
        n_tokens += int(valid.sum())
        item_max[rows] = acts.amax(1)
        scored = tokens.prompt_mask.cpu()[:, :, None]
        scored_max[rows] = (acts * scored).amax(1)
        flat = acts[valid]  # [tokens, feat]
        for j in range(n):
            col = flat[:, j]
            nonzero[j].append(col[col > 0])
    return CorpusScan(n_tokens, [torch.cat(v) for v in nonzero], item_max, scored_max)


@torch.no_grad()
def top_contexts(
    model: ChatModel,
    saes: SAESet,
    items: Sequence[CorpusItem],
    features: FeatureList,
    item_max: Tensor,
    n: int,
    before: int,
    after: int,
    batch_size: int = 32,
) -> list[list[dict[str, Any]]]:
    """Per feature, its ``n`` top items (by their max) as windows around the peak token:
    ``{"source", "tokens", "acts", "peak"}`` (``peak`` indexes the window)."""
    k = min(n, len(items))
    values, idx = item_max.topk(k, dim=0) if k else (item_max[:0], item_max[:0].long())
    wanted = sorted({int(i) for j in range(len(features)) for i in idx[:, j][values[:, j] > 0]})
    acts_of: dict[int, Tensor] = {}
    for start in range(0, len(wanted), batch_size):
        rows = wanted[start : start + batch_size]
        acts, tokens, _ = _encode_rows(model, saes, [items[i] for i in rows], features)
        for b, i in enumerate(rows):
            real = tokens.attention_mask[b].bool().cpu()
            acts_of[i] = acts[b][real]
    out = []
    for j in range(len(features)):
        ctxs = []
        for v, i in zip(values[:, j].tolist(), idx[:, j].tolist(), strict=True):
            if v <= 0:
                break
            ctxs.append(_window(model, items[i], acts_of[i][:, j], before, after))
        out.append(ctxs)
    return out


def _window(
    model: ChatModel, item: CorpusItem, acts: Tensor, before: int, after: int
) -> dict[str, Any]:
    peak = int(acts.argmax())
    lo, hi = max(0, peak - before), min(len(item.ids), peak + after + 1)
    tok = model.tokenizer
    return {
        "source": item.source,
        "tokens": [tok.decode([t]) for t in item.ids[lo:hi]],
        "acts": [round(float(a), 4) for a in acts[lo:hi]],
        "peak": peak - lo,
        "cut_left": lo > 0,
        "cut_right": hi < len(item.ids),
    }


def histogram(values: Tensor, bins: int, low: float = 0.0) -> dict[str, Any]:
    """Counts of ``values`` in ``bins`` equal bins from ``low`` to their max."""
    if values.numel() == 0:
        return {"edges": [], "counts": []}
    top = float(values.max())
    counts = torch.histc(values.float(), bins=bins, min=low, max=top if top > low else low + 1e-6)
    edges = torch.linspace(low, top, bins + 1)
    return {
        "edges": [round(float(e), 5) for e in edges],
        "counts": [int(c) for c in counts],
    }


def label_tracking(
    items: Sequence[CorpusItem], scored_max: Float[Tensor, "item feat"], min_items: int = 3
) -> list[list[dict[str, Any]]]:
    """Per feature and label family, the value it fires on most selectively: mean scored
    max on items with that value / on items of the same family without it
    (``selectivity`` None: it never fires on the others). Families ranked best first."""
    families: dict[str, dict[str, list[int]]] = {}
    for i, it in enumerate(items):
        for fam, value in it.labels.items():
            families.setdefault(fam, {}).setdefault(value, []).append(i)
    out = []
    for j in range(scored_max.shape[1]):
        found = [
            _best_value(values, scored_max[:, j], fam, min_items)
            for fam, values in families.items()
        ]
        ranked = sorted((f for f in found if f is not None), key=_rank, reverse=True)
        out.append(ranked)
    return out


def _rank(entry: dict[str, Any]) -> tuple[float, float]:
    s = entry["selectivity"]
    return (float("inf") if s is None else s, entry["mean_in"])


def _best_value(
    values: Mapping[str, list[int]], acts: Tensor, family: str, min_items: int
) -> dict[str, Any] | None:
    members = {i for rows in values.values() for i in rows}
    best = None
    for value, rows in values.items():
        others = sorted(members - set(rows))
        if len(rows) < min_items or len(others) < min_items:
            continue
        inside, outside = float(acts[rows].mean()), float(acts[others].mean())
        if inside <= 0:
            continue
        entry = {
            "family": family,
            "value": value,
            "selectivity": round(inside / outside, 3) if outside > 0 else None,
            "mean_in": round(inside, 4),
            "mean_out": round(outside, 4),
            "n_in": len(rows),
            "n_out": len(others),
        }
        if best is None or _rank(entry) > _rank(best):
            best = entry
    return best
