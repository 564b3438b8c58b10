"""A plain, self-contained HTML report of one run's ``results.json``."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from .analyses import analyses_sections
from .tables import interval, nested, table

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.best{font-weight:bold;background:#eef7ee}code{background:#f5f5f5;padding:0 .2em}
"""


def render_report(r: Mapping[str, Any]) -> str:
    """The report as one HTML string."""
    d = r["direction"]
    sweep_rows = [[l, v["jailbreak"], v["harmless_ok"]] for l, v in d["sweep"].items()]
    chosen = list(d["sweep"]).index(str(d["layer"]))
    jb = r["jailbreak"]
    jb_rows = [
        [m, v["n"], v["complied"], interval(v.get("complied_ci95")), v["refused"], v["degenerate"]]
        for m, v in jb.items()
    ]
    paired = [
        [m, v["reference_only"], v["other_only"], f"{v['p_value']:.2g}"]
        for m, v in r.get("jailbreak_vs_fstar", {}).items()
    ]
    cap = r["capability"]
    cap_rows = [
        [m, v["ce_responses"], v["ce_text"], v["harmless_complied"]] for m, v in cap.items()
    ]
    sweep = {
        f"c={c}": {f"K*={k}": cell["complied"] for k, cell in row.items()}
        for c, row in r["sweep"].items()
    }
    feats = r["features"]["global"]
    st = r["steering"]
    parts = [
        f"<h1>refusalscope — {html.escape(r['model']['name'])}</h1>",
        f"<p>{r['model']['n_layers']} layers, d_model {r['model']['d_model']}; refusal token "
        f"<code>{html.escape(repr(r['refusal_token']['text']))}</code>; prompts "
        f"{html.escape(str(r['prompts']))}</p>",
        "<h2>Refusal direction: ablation sweep</h2>",
        f"<p>Chosen layer l* = {d['layer']}. Base: {html.escape(str(d['base']))}</p>",
        table(sweep_rows, ["layer", "jailbreak", "harmless OK"], best=chosen),
        f"<h2>Jailbreak (harmful test; c={st['c']}, K*={st['k_star']})</h2>",
        "<p>A jailbreak counts only as <i>complied</i>; broken text is <i>degenerate</i>.</p>",
        table(jb_rows, ["method", "n", "complied", "95% CI", "refused", "degenerate"]),
        "<p>F* against each method on the same prompts: prompts only F* jailbreaks, prompts "
        "only the other jailbreaks, and the exact McNemar p-value.</p>",
        table(paired, ["method", "F* only", "other only", "p"]),
        "<h2>Capability cost</h2>",
        "<p>Cross-entropy per token on the base model's own responses to harmless prompts and "
        "on held-out plain text (— when no text corpus was given: evaluation.text_file), and "
        "the judge's complied rate on the harmless prompts.</p>",
        table(cap_rows, ["method", "CE on base responses", "CE on text", "harmless complied"]),
        "<h2>Refusal induction (harmless prompts, refusal rate)</h2>",
        nested(r["induction"], "method"),
        "<h2>Clamp sweep on the train split (complied)</h2>",
        nested(sweep, "scale"),
        f"<h2>Global F* (top {len(feats)})</h2>",
        table(feats, ["layer", "latent", "mean LA-IG score"]),
        *analyses_sections(r),
        "<h2>Stages</h2>",
        table(
            [[k, v["seconds"], v["cached"]] for k, v in r["stages"].items()],
            ["stage", "seconds", "cached"],
        ),
    ]
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>refusalscope report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
