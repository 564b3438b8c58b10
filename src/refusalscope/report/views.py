"""What the templates show of the feature cards, the token-level attributions and the
generations: colours, bar heights and groupings computed here, text left to the template
(which escapes it)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .tables import METHOD_LABELS, feature_name

GENERATIONS_PER_GROUP = 200
"""Generations shown per (evaluation, method) at most (generations.jsonl has them all)."""


def shade(
    value: float, top: float, positive: str = "42,157,143", negative: str = "46,111,187"
) -> str:
    """A CSS background for ``value`` on a scale whose end is ``top`` (sign picks the hue)."""
    if top <= 0 or value == 0:
        return "transparent"
    alpha = min(abs(value) / top, 1.0) * 0.85
    rgb = positive if value > 0 else negative
    return f"rgba({rgb},{alpha:.2f})"


def shown_token(text: str) -> str:
    """A token as it reads in a chip: newlines and tabs visible, an empty one as ∅."""
    return text.replace("\n", "↵").replace("\t", "⇥") or "∅"


def bars(hist: Mapping[str, Sequence[float]], height: int = 40) -> list[dict[str, Any]]:
    """Bar heights (pixels, log-scaled counts) and labels of a card's histogram."""
    counts, edges = hist.get("counts") or [], hist.get("edges") or []
    top = max((math.log1p(c) for c in counts), default=0.0) or 1.0
    return [
        {
            "h": round(height * math.log1p(c) / top, 1),
            "label": f"{edges[i]:.2f}–{edges[i + 1]:.2f}: {c}",
        }
        for i, c in enumerate(counts)
    ]


def card_view(card: Mapping[str, Any]) -> dict[str, Any]:
    top = card.get("max_activation") or 0.0
    contexts = [
        {
            "source": ctx["source"],
            "cut_left": ctx.get("cut_left", False),
            "cut_right": ctx.get("cut_right", False),
            "tokens": [
                {"text": shown_token(t), "bg": shade(a, top), "act": a, "peak": i == ctx["peak"]}
                for i, (t, a) in enumerate(zip(ctx["tokens"], ctx["acts"], strict=True))
            ],
        }
        for ctx in card["contexts"]
    ]
    labels = [
        {
            **lab,
            "ratio": "only here" if lab["selectivity"] is None else f"{lab['selectivity']:.1f}×",
        }
        for lab in card.get("labels") or []
    ]
    return {
        **card,
        "name": feature_name(card["layer"], card["latent"]),
        "contexts_view": contexts,
        "labels_view": labels,
        "bars": bars(card["histogram"]),
        "laig_bars": bars(card["laig"]["histogram"]) if card.get("laig") else [],
        "lens_top": [(shown_token(t), v) for t, v in card["logit_lens"]["top"]],
        "lens_bottom": [(shown_token(t), v) for t, v in card["logit_lens"]["bottom"]],
    }


def token_maps(examples: Sequence[Mapping[str, Any]], n_rows: int = 6) -> list[dict[str, Any]]:
    """Per example prompt: its tokens coloured by the summed LA-IG of the global F*, and the
    ``n_rows`` features with the largest total |LA-IG| as rows of the same colouring."""
    out = []
    for ex in examples:
        A = ex["attribution"]  # [token][feat]
        n_feat = len(ex["features"])
        total = [sum(row) for row in A]
        top = max((abs(v) for v in total), default=0.0)
        weight = [sum(abs(A[t][j]) for t in range(len(A))) for j in range(n_feat)]
        order = sorted(range(n_feat), key=lambda j: -weight[j])[:n_rows]
        cell_top = max((abs(A[t][j]) for t in range(len(A)) for j in order), default=0.0)
        out.append(
            {
                "prompt": ex["prompt"],
                "tokens": [
                    {
                        "text": shown_token(tok),
                        "bg": shade(v, top, "192,57,43", "46,111,187"),
                        "value": v,
                        "in_prompt": ex["in_prompt"][t],
                    }
                    for t, (tok, v) in enumerate(zip(ex["tokens"], total, strict=True))
                ],  # fmt: skip
                "rows": [
                    {
                        "feature": ex["features"][j],
                        "cells": [
                            {
                                "bg": shade(A[t][j], cell_top, "192,57,43", "46,111,187"),
                                "value": A[t][j],
                            }
                            for t in range(len(A))
                        ],
                    }
                    for j in order
                ],
            }
        )
    return out


def generation_groups(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Generations by evaluation and method (at most ``GENERATIONS_PER_GROUP`` each), with
    the values the page's filters offer."""
    shown, counts = [], {}
    for row in rows:
        key = (row.get("eval", ""), row.get("method", ""))
        counts[key] = counts.get(key, 0) + 1
        if counts[key] <= GENERATIONS_PER_GROUP:
            shown.append(
                {
                    "eval": key[0],
                    "method": METHOD_LABELS.get(key[1], key[1]),
                    "prompt": row.get("prompt", ""),
                    "response": row.get("response", ""),
                    "judgement": row.get("judgement", ""),
                }
            )
    return {
        "rows": shown,
        "evals": sorted({r["eval"] for r in shown}),
        "methods": sorted({r["method"] for r in shown}),
        "judgements": sorted({r["judgement"] for r in shown}),
        "total": len(rows),
        "capped": any(n > GENERATIONS_PER_GROUP for n in counts.values()),
    }
