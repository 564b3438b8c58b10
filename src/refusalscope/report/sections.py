"""The method's sections of the report: the refusal direction, jailbreaks per method, the
(c, K*) sweep, capability cost and refusal induction."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from . import figures as fg
from .tables import METHOD_LABELS, Section, Table, features, interval, nested, pct


def _m(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def direction_section(r: Mapping[str, Any]) -> Section:
    d = r["direction"]
    layers = list(d["sweep"])
    rows = [[l, v["jailbreak"], v["harmless_ok"]] for l, v in d["sweep"].items()]
    base = d.get("base") or {}
    return Section(
        "direction",
        "Refusal direction",
        [
            "The refusal direction r̂ is the difference between the mean residual on harmful "
            "and on harmless train prompts. Each layer's direction was ablated from every "
            "layer on the validation prompts; the chosen layer l* = "
            f"{d['layer']} jailbreaks the most harmful prompts while harmless ones still get "
            f"answers. Without any intervention: {pct(base.get('jailbreak'))} of the harmful "
            f"prompts jailbroken, {pct(base.get('harmless_ok'))} of the harmless answered.",
        ],
        [Markup(fg.div(fg.direction_sweep(d)))],
        [
            Table(
                ["layer", "harmful jailbroken", "harmless OK"],
                rows,
                best=layers.index(str(d["layer"])),
            )
        ],
    )


def jailbreak_section(r: Mapping[str, Any]) -> Section:
    st, jb = r["steering"], r["jailbreak"]
    rows = [
        [
            _m(m),
            v["n"],
            v["complied"],
            interval(v.get("complied_ci95")),
            v["refused"],
            v["degenerate"],
        ]
        for m, v in jb.items()
    ]
    paired = [
        [_m(m), v["reference_only"], v["other_only"], f"{v['p_value']:.2g}"]
        for m, v in r.get("jailbreak_vs_fstar", {}).items()
    ]
    how = "chosen by the sweep on the train split" if st.get("from_sweep") else "as configured"
    by_dataset = [
        [dataset, _m(m), v["n"], v["complied"], interval(v.get("complied_ci95"))]
        for dataset, methods in (r.get("jailbreak_by_dataset") or {}).items()
        for m, v in methods.items()
    ]
    per_dataset = [
        Table(
            ["dataset", "method", "n", "complied", "95% CI"],
            by_dataset,
            caption="The same generations per harmful test dataset.",
        )
    ]
    return Section(
        "jailbreak",
        "Jailbreak: clamping each method's features",
        [
            f"Each method's features are clamped to c × their value (c = {st['c']}, K* = "
            f"{st['k_star']}, {how}) while the model answers the harmful test prompts. A "
            "jailbreak counts only as complied; broken text is degenerate. Intervals are 95 % "
            "Wilson intervals.",
        ],
        [Markup(fg.div(fg.jailbreak_bars(jb)))],
        [
            Table(["method", "n", "complied", "95% CI", "refused", "degenerate"], rows),
            Table(
                ["method", "F* only", "other only", "exact McNemar p"],
                paired,
                caption="F* against each method on the same prompts: prompts only F* "
                "jailbreaks, prompts only the other does.",
            ),
            *(per_dataset if by_dataset else []),
        ],
    )


def sweep_section(r: Mapping[str, Any]) -> Section:
    best = r.get("sweep_best") or [r["steering"]["c"], r["steering"]["k_star"]]
    complied = {
        f"c={c}": {f"K*={k}": cell["complied"] for k, cell in row.items()}
        for c, row in r["sweep"].items()
    }
    feats = r["features"]["global"]
    return Section(
        "sweep",
        "How many features, how hard: the c × K* sweep",
        [
            "Jailbreak rate on the harmful train prompts for every clamp value c and number "
            f"of features K*; the run uses c = {best[0]}, K* = {best[1]}.",
        ],
        [
            Markup(fg.div(fg.k_curve(r["sweep"]))),
            Markup(fg.div(fg.sweep_heatmap(r["sweep"], best))),
        ],
        [
            nested(complied, "clamp"),
            Table(
                ["rank", "feature", "mean LA-IG score"],
                [
                    [i + 1, f, s[2]]
                    for i, (f, s) in enumerate(zip(features(feats), feats, strict=True))
                ],
                caption=f"Global F* (top {len(feats)} by mean LA-IG over the train prompts)",
            ),
        ],
    )


def capability_section(r: Mapping[str, Any]) -> Section:
    cap = r["capability"]
    rows = [
        [_m(m), v["ce_responses"], v["ce_text"], v["harmless_complied"]] for m, v in cap.items()
    ]
    return Section(
        "capability",
        "Capability cost",
        [
            "Cross-entropy per token of the base model's own responses to harmless prompts "
            "and of held-out plain text, with each method's clamp on (— when no text corpus "
            "was given: evaluation.text_file), and the share of harmless prompts still answered.",
        ],
        [Markup(fg.div(fg.capability_bars(cap)))],
        [Table(["method", "CE on base responses", "CE on text", "harmless answered"], rows)],
    )


def induction_section(r: Mapping[str, Any]) -> Section:
    ind = r["induction"]
    return Section(
        "induction",
        "Refusal induction",
        [
            "The reverse test on harmless prompts: set the features to growing values (or add "
            "the direction with growing coefficients) and count refusals.",
        ],
        [Markup(fg.div(fg.induction_curves(ind)))],
        [nested({_m(m): v for m, v in ind.items()}, "method")],
    )
