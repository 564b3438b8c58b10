"""Plots whose points are features: hover names the feature, a click opens its card."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import plotly.graph_objects as go
from torch import Tensor

from .figures import NEG, POS
from .tables import card_id, feature_name


def faithfulness_scatter(t: Mapping[str, Tensor], cards: set[str]) -> go.Figure:
    """Mean LA-IG score against mean exact Δm over the test prompts, one point per
    evaluated latent (candidate pool, and latents only some method picked)."""
    pairs = t["candidates"].tolist()
    x = t["score.fstar"].float().mean(0).tolist()
    y = t["exact_effect"].float().mean(0).tolist()
    in_pool = t["in_pool"].tolist()
    fig = go.Figure()
    for flag, name, color in (
        (True, "candidate pool", "#264653"),
        (False, "outside the pool", "#e76f51"),
    ):
        rows = [i for i, p in enumerate(in_pool) if p == flag]
        if not rows:
            continue
        fig.add_scatter(
            x=[x[i] for i in rows], y=[y[i] for i in rows], mode="markers", name=name,
            marker={"color": color, "size": 8, "opacity": 0.8},
            text=[feature_name(*pairs[i]) for i in rows],
            customdata=[card_id(*pairs[i]) if card_id(*pairs[i]) in cards else "" for i in rows],
            hovertemplate="%{text}<br>LA-IG %{x:.3f}<br>exact Δm %{y:.3f}<extra></extra>",
        )  # fmt: skip
    fig.update_layout(title="LA-IG against exact patching (mean over prompts)")
    fig.update_xaxes(title="LA-IG score (F*'s ranking)")
    fig.update_yaxes(title="exact Δm (latent moved alone)")
    return fig


def circuit_graph(graph: Mapping[str, Any], cards: set[str]) -> go.Figure:
    """The global F* by layer (x) and rank (y); edges earlier → later, red when
    patching the earlier latent raises the later one, blue when it lowers it, width by
    |measured|."""
    nodes = graph["nodes"]
    by_layer: dict[int, list[int]] = {}
    for n in sorted(range(len(nodes)), key=lambda j: -abs(nodes[j]["laig"])):
        by_layer.setdefault(nodes[n]["layer"], []).append(n)
    pos = {}
    for layer, members in by_layer.items():
        for rank, n in enumerate(members):
            pos[(nodes[n]["layer"], nodes[n]["latent"])] = (layer, -rank)
    fig = go.Figure()
    top = max((abs(e["measured"]) for e in graph["edges"]), default=1.0) or 1.0
    for e in graph["edges"]:
        a, b = pos.get(tuple(e["from"])), pos.get(tuple(e["to"]))
        if a is None or b is None or abs(e["measured"]) < 0.02 * top:
            continue
        fig.add_scatter(
            x=[a[0], b[0]], y=[a[1], b[1]], mode="lines", showlegend=False, hoverinfo="skip",
            line={"color": POS if e["measured"] > 0 else NEG,
                  "width": 1 + 6 * abs(e["measured"]) / top},
            opacity=0.6,
        )  # fmt: skip
    for role, symbol in (("harm", "diamond"), ("refusal", "circle")):
        members = [n for n in nodes if n.get("role") == role]
        if not members:
            continue
        ids = [card_id(n["layer"], n["latent"]) for n in members]
        fig.add_scatter(
            x=[pos[(n["layer"], n["latent"])][0] for n in members],
            y=[pos[(n["layer"], n["latent"])][1] for n in members],
            mode="markers+text", name=f"{role} feature", marker={"size": 16, "symbol": symbol},
            text=[feature_name(n["layer"], n["latent"]) for n in members],
            textposition="top center",
            customdata=[i if i in cards else "" for i in ids],
            hovertemplate="%{text}<br>" + role + " feature<extra></extra>",
        )  # fmt: skip
    fig.update_layout(
        title="F* feature graph: measured effect of each earlier feature on later ones"
    )
    fig.update_xaxes(title="layer", dtick=1)
    fig.update_yaxes(visible=False)
    return fig
