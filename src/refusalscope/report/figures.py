"""The report's plots, with plotly: already installed with sae_lens, and its hover names
the feature behind every point (a click opens its card) — its JS is inlined once, so the
page still opens offline.

Each function takes a ``results.json`` section and returns a figure (``div`` renders it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .tables import METHOD_LABELS, num_key

COLORS = {"complied": "#2a9d8f", "degenerate": "#e9c46a", "refused": "#8d99ae"}
POS, NEG = "#c0392b", "#2e6fbb"
"""Edge and attribution colours: towards complying (positive Δm) / towards refusing."""


def div(fig: go.Figure, height: int = 340) -> str:
    """The figure as an HTML ``div`` and its script (the plotly JS is on the page once)."""
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        font={"size": 13},
        legend={"orientation": "h", "y": -0.2},
    )
    digest = hashlib.sha256(fig.to_json().encode()).hexdigest()[:12]
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=f"fig-{digest}",  # from the content: the same run renders the same page
        config={"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d"]},
    )


def label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def direction_sweep(d: Mapping[str, Any]) -> go.Figure:
    layers = sorted(d["sweep"], key=num_key)
    fig = go.Figure()
    for key, name in (("jailbreak", "harmful prompts jailbroken"), ("harmless_ok", "harmless OK")):
        fig.add_scatter(
            x=[int(l) for l in layers], y=[d["sweep"][l][key] for l in layers], name=name,
            mode="lines+markers",
        )  # fmt: skip
    fig.add_vline(
        x=d["layer"], line_dash="dot", annotation_text=f"l* = {d['layer']}",
        annotation_position="bottom right",
    )  # fmt: skip
    fig.update_layout(title="Ablating each layer's r̂ everywhere (validation prompts)")
    fig.update_xaxes(title="layer the direction is taken from", dtick=1)
    fig.update_yaxes(title="rate", range=[-0.05, 1.05])
    return fig


def jailbreak_bars(jb: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    methods = list(jb)
    fig = go.Figure()
    for key in ("complied", "degenerate", "refused"):
        ys = [jb[m][key] for m in methods]
        cis = [jb[m].get("complied_ci95") for m in methods] if key == "complied" else None
        fig.add_bar(
            x=[label(m) for m in methods], y=ys, name=key, marker_color=COLORS[key],
            error_y=error_bars(ys, cis) if cis else None,
        )  # fmt: skip
    fig.update_layout(barmode="stack", title="Harmful test prompts: judged responses")
    fig.update_yaxes(title="share of prompts", range=[0, 1.05])
    return fig


def error_bars(values: Sequence[float | None], cis: Sequence[Sequence[float] | None]) -> dict:
    """plotly's asymmetric error bars from ``[low, high]`` intervals (none where missing)."""
    up, down = [], []
    for v, ci in zip(values, cis, strict=True):
        ok = ci is not None and v is not None
        up.append(ci[1] - v if ok else 0)
        down.append(v - ci[0] if ok else 0)
    return {"type": "data", "array": up, "arrayminus": down, "color": "#333"}


def sweep_heatmap(sweep: Mapping[str, Mapping[str, Any]], best: Sequence[Any]) -> go.Figure:
    cs = sorted(sweep, key=num_key)
    ks = sorted({k for row in sweep.values() for k in row}, key=num_key)
    z = [[sweep[c].get(k, {}).get("complied") for k in ks] for c in cs]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=[f"K*={k}" for k in ks], y=[f"c={c}" for c in cs], colorscale="Viridis",
            zmin=0, zmax=1, text=[[_text(v) for v in row] for row in z], texttemplate="%{text}",
            colorbar={"title": "complied"},
        )
    )  # fmt: skip
    fig.update_layout(title=f"Clamp sweep (train split): chosen c={best[0]}, K*={best[1]}")
    return fig


def k_curve(sweep: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    fig = go.Figure()
    for c in sorted(sweep, key=num_key):
        ks = sorted(sweep[c], key=num_key)
        fig.add_scatter(
            x=[int(k) for k in ks], y=[sweep[c][k]["complied"] for k in ks], name=f"c={c}",
            mode="lines+markers",
        )  # fmt: skip
    fig.update_layout(title="Jailbreak rate against K* (train split)")
    fig.update_xaxes(title="K* (features clamped per prompt)")
    fig.update_yaxes(title="complied", range=[-0.05, 1.05])
    return fig


def capability_bars(cap: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    methods = list(cap)
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("CE per token (lower is better)", "harmless prompts answered"),
    )
    for key, name in (
        ("ce_responses", "on the base model's responses"),
        ("ce_text", "on plain text"),
    ):
        ys = [cap[m].get(key) for m in methods]
        if any(y is not None for y in ys):
            fig.add_bar(x=[label(m) for m in methods], y=ys, name=name, row=1, col=1)
    fig.add_bar(
        x=[label(m) for m in methods], y=[cap[m]["harmless_complied"] for m in methods],
        name="complied", marker_color=COLORS["complied"], row=1, col=2, showlegend=False,
    )  # fmt: skip
    fig.update_yaxes(range=[0, 1.05], row=1, col=2)
    return fig


def induction_curves(ind: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    feature_methods = [m for m in ind if m != "add_direction"]
    fig = make_subplots(
        rows=1, cols=2,
        subplot_titles=("features set to this value", "r̂ added with this coefficient"),
    )  # fmt: skip
    for col, methods in ((1, feature_methods), (2, [m for m in ind if m == "add_direction"])):
        for m in methods:
            xs = sorted(ind[m], key=num_key)
            fig.add_scatter(
                x=[f"{float(x):.3g}" for x in xs], y=[ind[m][x] for x in xs], name=label(m),
                mode="lines+markers", row=1, col=col,
            )  # fmt: skip
    fig.update_xaxes(type="category")
    fig.update_yaxes(title="harmless prompts refused", range=[-0.05, 1.05])
    return fig


def transfer_heatmap(c: Mapping[str, Any]) -> go.Figure:
    rows = list(c["transfer"])
    cols = sorted({k for v in c["transfer"].values() for k in v})
    z = [[c["transfer"][r].get(k) for k in cols] for r in rows]
    fig = go.Figure(
        go.Heatmap(
            z=z, x=cols, y=rows, colorscale="Viridis", zmin=0, zmax=1,
            text=[[_text(v) for v in row] for row in z], texttemplate="%{text}",
            colorbar={"title": "complied"},
            hovertemplate="clamp %{y}'s specific set<br>on %{x}: %{z:.2f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_layout(title="Category transfer: clamp row's specific set, jailbreak column")
    fig.update_xaxes(title="test prompts of category")
    fig.update_yaxes(title="specific features of", autorange="reversed")
    return fig


def drop_bars(j: Mapping[str, Any]) -> go.Figure:
    groups = list(j["groups"])
    fig = go.Figure()
    for key, name in (("refusal_drop", "refusal features"), ("harm_drop", "harm features")):
        vals = [j["groups"][g][key] for g in groups]
        if all(v is None for v in vals):
            continue
        cis = [j["groups"][g][f"{key}_ci95"] for g in groups]
        fig.add_bar(x=groups, y=vals, name=name, error_y=error_bars(vals, cis))
    fig.update_layout(title="Drop of F* activation, wrapped vs plain (1 = gone)", barmode="group")
    fig.update_yaxes(title="relative drop")
    return fig


def probe_bars(p: Mapping[str, Any]) -> go.Figure:
    probes = list(p["in_distribution"])
    fig = go.Figure()
    ys = [p["in_distribution"][q].get("accuracy") for q in probes]
    fig.add_bar(x=probes, y=ys, name="in distribution")
    ood = p.get("ood") or {}
    if ood:
        o = [ood.get(q, {}) for q in probes]
        ys = [x.get("accuracy") for x in o]
        cis = [x.get("accuracy_ci95") or x.get("accuracy_range95") for x in o]
        fig.add_bar(x=probes, y=ys, name="wrapped prompts (OOD)", error_y=error_bars(ys, cis))
    fig.update_layout(title="Probe accuracy", barmode="group")
    fig.update_yaxes(range=[0, 1.05], title="accuracy")
    return fig


def _text(v: float | None) -> str:
    return "" if v is None else f"{v:.2f}"
