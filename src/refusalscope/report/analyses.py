"""The analyses' plain sections of the report: harm categories, jailbreak prompts, probes
(then exact patching and the F* circuit, ``report.ground_truth``)."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from .ground_truth import circuit_section, faithfulness_section
from .tables import interval, nested, skipped_section, table


def categories_section(c: Mapping[str, Any] | None) -> str:
    title = "Harm categories"
    if (skip := skipped_section(title, c)) is not None:
        return skip
    assert c is not None
    checks = c["checks"]
    diag = checks["transfer_diagonal"]
    jb_rows = [
        [
            cat,
            v["specific"],
            v["common"],
            c["jailbreak_raw"][cat]["all"]["complied"],
            c["n_test"][cat],
        ]
        for cat, v in c["jailbreak"].items()
    ]
    sel_rows = [
        [
            cat,
            len(v),
            sum(r is not None and r > 1 for r in v),
            ", ".join(f"{r:.2f}" for r in v if r is not None),
        ]
        for cat, v in c["selectivity"].items()
    ]
    return "".join(
        [
            f"<h2>{title}</h2>",
            f"<p>Per-category F* (K*={c['k_star']}); {len(c['common'])} features common to every "
            f"category: <code>{html.escape(str(c['common']))}</code>; "
            f"{len(next(iter(c['specific'].values())))} specific per category.</p>",
            "<p>Jailbreak on each category's test prompts, normalised by clamping all "
            "(specific: its own specific set with the common ones pinned; common: the common "
            "set with its specific ones pinned).</p>",
            table(jb_rows, ["category", "specific / all", "common / all", "all (complied)", "n"]),
            "<p>Transfer: complied on category <i>to</i> (columns) when clamping category "
            f"<i>from</i>'s specific set (rows). Diagonal {diag['diagonal']}, off-diagonal "
            f"{diag['off_diagonal']}, difference {diag['difference']} "
            f"(95% CI {interval(diag['difference_ci95'])}, paired over "
            f"{diag['n_prompts']} prompts).</p>",
            nested(c["transfer"], "from \\ to"),
            "<p>Selectivity of each specific feature: activation on its own category's prompts "
            f"/ on the others'. Share above 1: {checks['selective_fraction']}. Common features "
            f"inside the global F*: {checks['common_in_global_fstar']}.</p>",
            table(sel_rows, ["category", "specific features", "selectivity > 1", "ratios"]),
            "<p>Overlap of the per-category sets (Jaccard)</p>",
            nested(c["overlap"], "category"),
        ]
    )


def jailbreak_section(j: Mapping[str, Any] | None) -> str:
    title = "Jailbreak prompts: which features a jailbreak suppresses"
    if (skip := skipped_section(title, j)) is not None:
        return skip
    assert j is not None
    rows = [
        [
            g,
            v["n"],
            v["harm_drop"],
            interval(v["harm_drop_ci95"]),
            v["refusal_drop"],
            interval(v["refusal_drop_ci95"]),
        ]
        for g, v in j["groups"].items()
    ]
    d = j["difference"]
    rows.append(
        [
            "successful − failed",
            "",
            d["harm_drop"],
            interval(d["harm_drop_ci95"]),
            d["refusal_drop"],
            interval(d["refusal_drop_ci95"]),
        ]
    )
    groups = [g for g in ("successful", "failed") if g in j["groups"]]
    feat_rows = [
        [str(f["feature"]), f["label"], f["count"], *(f.get(g) for g in groups)]
        for f in j["features"]
    ]
    return "".join(
        [
            f"<h2>{title}</h2>",
            f"<p>{j['n_pairs']} (plain, wrapped) pairs; F* (K*={j['k_star']}) on the plain "
            f"version: {j['labelled']['harm']} harm and {j['labelled']['refusal']} refusal "
            f"feature slots. Rule: {html.escape(j['rule'])}</p>",
            table(rows, ["group", "pairs", "harm drop", "95% CI", "refusal drop", "95% CI"]),
            "<p>The features most often in the plain prompts' F* (pairs: how many), and the "
            "drop of each alone per group</p>",
            table(feat_rows, ["feature", "label", "pairs", *(f"{g} drop" for g in groups)]),
        ]
    )


def probes_section(p: Mapping[str, Any] | None) -> str:
    title = "Probes: harmful vs harmless from last-token activations"
    if (skip := skipped_section(title, p)) is not None:
        return skip
    assert p is not None
    rows = []
    for probe in p["in_distribution"]:
        i, o = p["in_distribution"][probe], p.get("ood", {}).get(probe, {})
        rows.append(
            [
                probe,
                i.get("accuracy"),
                i.get("auroc"),
                o.get("accuracy"),
                interval(o.get("accuracy_ci95")) or interval(o.get("accuracy_range95")),
                o.get("auroc"),
            ]
        )
    dense = p["detail"]["dense"]
    return "".join(
        [
            f"<h2>{title}</h2>",
            f"<p>Inputs: the top {p['k']} global F* features, {p['k']} random active latents "
            f"(mean over {p['detail']['random']['draws']} draws; interval = 2.5–97.5 % of "
            f"draws), the residual at layer {dense['layer']} (best on validation) and the "
            "projection on the refusal direction. Out of distribution: the wrapped prompts "
            "(all harmful; accuracy = share called harmful) against the harmless test prompts "
            f"(AUROC). Sizes: {html.escape(str(p['sizes']))}</p>",
            table(rows, ["probe", "accuracy", "AUROC", "OOD accuracy", "95%", "OOD AUROC"]),
            _dense_layers(dense),
        ]
    )


def analyses_sections(r: Mapping[str, Any]) -> list[str]:
    return [
        categories_section(r.get("categories")),
        jailbreak_section(r.get("jailbreak_analysis")),
        probes_section(r.get("probes")),
        faithfulness_section(r.get("faithfulness")),
        circuit_section(r.get("circuit")),
    ]


def _dense_layers(dense: Mapping[str, Any]) -> str:
    """Validation scores and OOD accuracy of the residual probe at every layer."""
    ood = dense.get("ood_accuracy_by_layer", {})
    rows = [[layer, *v, ood.get(layer)] for layer, v in dense["val_by_layer"].items()]
    return (
        "<p>The residual probe at every layer (the chosen one is the best on validation; "
        "OOD accuracy is shown, not used to choose)</p>"
        + table(rows, ["layer", "val accuracy", "val AUROC", "val −log-loss", "OOD accuracy"])
    )
