"""The analyses' sections of the report: harm categories, jailbreak prompts, probes
(then exact patching and the F* circuit, ``report.ground_truth``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup

from . import figures as fg
from .tables import Section, Table, features, interval, nested, skipped


def categories_section(c: Mapping[str, Any] | None) -> Section:
    if (skip := skipped("categories", "Harm categories", c)) is not None:
        return skip
    assert c is not None
    checks = c["checks"]
    diag = checks["transfer_diagonal"]
    raw = c["jailbreak_raw"]
    jb_rows = [
        [cat, v["specific"], v["common"], raw[cat]["all"]["complied"], c["n_test"][cat]]
        for cat, v in c["jailbreak"].items()
    ]
    sel_rows = [
        [
            cat,
            ", ".join(str(f) for f in features(c["specific"].get(cat, []))) or "—",
            sum(r is not None and r > 1 for r in v),
            ", ".join(f"{r:.2f}" for r in v if r is not None),
        ]
        for cat, v in c["selectivity"].items()
    ]
    common = features(c["common"])
    return Section(
        "categories",
        "Harm categories",
        [
            f"Each category gets its own F* (K* = {c['k_star']}). {len(common)} features are "
            "common to every category; the rest are specific to one. Clamping a category's "
            "specific set should jailbreak its own prompts more than the others' (the "
            f"diagonal of the transfer map): diagonal {diag['diagonal']}, off-diagonal "
            f"{diag['off_diagonal']}, difference {diag['difference']} "
            f"{interval(diag['difference_ci95'])} paired over {diag['n_prompts']} prompts.",
            f"Share of specific features more active on their own category than on the "
            f"others: {checks['selective_fraction']}. Common features inside the global F*: "
            f"{checks['common_in_global_fstar']}.",
        ],
        [Markup(fg.div(fg.transfer_heatmap(c), height=420))],
        [
            Table(["common feature"], [[f] for f in common], caption="Common to every category"),
            Table(
                ["category", "specific / all", "common / all", "all (complied)", "n"],
                jb_rows,
                caption="Jailbreak on each category's test prompts, normalised by clamping all "
                "(specific: its own specific set with the common ones pinned; common: the "
                "common set with its specific ones pinned).",
            ),
            Table(
                ["category", "specific features", "selectivity > 1", "ratios"],
                sel_rows,
                caption="Selectivity: activation on its own category's prompts / on the others'.",
            ),
            nested(c["overlap"], "category", "Per-category F* overlap (Jaccard)"),
        ],
    )


def jailbreak_section(j: Mapping[str, Any] | None) -> Section:
    title = "Jailbreak prompts: which features a jailbreak suppresses"
    if (skip := skipped("jailbreak-prompts", title, j)) is not None:
        return skip
    assert j is not None
    rows = [
        [g, v["n"], v["harm_drop"], interval(v["harm_drop_ci95"]), v["refusal_drop"],
         interval(v["refusal_drop_ci95"])]
        for g, v in j["groups"].items()
    ]  # fmt: skip
    d = j["difference"]
    rows.append(
        ["successful − failed", "", d["harm_drop"], interval(d["harm_drop_ci95"]),
         d["refusal_drop"], interval(d["refusal_drop_ci95"])]
    )  # fmt: skip
    groups = [g for g in ("successful", "failed") if g in j["groups"]]
    feat_rows = [
        [*features([f["feature"]]), f["label"], f["count"], *(f.get(g) for g in groups)]
        for f in j["features"]
    ]
    return Section(
        "jailbreak-prompts",
        title,
        [
            f"{j['n_pairs']} (plain, wrapped) pairs. F* (K* = {j['k_star']}) of the plain "
            f"version: {j['labelled']['harm']} harm and {j['labelled']['refusal']} refusal "
            f"feature slots. {j['rule']}",
        ],
        [Markup(fg.div(fg.drop_bars(j)))],
        [
            Table(["group", "pairs", "harm drop", "95% CI", "refusal drop", "95% CI"], rows),
            Table(
                ["feature", "label", "pairs", *(f"{g} drop" for g in groups)],
                feat_rows,
                caption="The features most often in the plain prompts' F*, and the drop of each "
                "alone per group.",
            ),
        ],
    )


def probes_section(p: Mapping[str, Any] | None) -> Section:
    title = "Probes: harmful vs harmless from last-token activations"
    if (skip := skipped("probes", title, p)) is not None:
        return skip
    assert p is not None
    rows = []
    for probe, i in p["in_distribution"].items():
        o = p.get("ood", {}).get(probe, {})
        ci = interval(o.get("accuracy_ci95")) or interval(o.get("accuracy_range95"))
        rows.append(
            [probe, i.get("accuracy"), i.get("auroc"), o.get("accuracy"), ci, o.get("auroc")]
        )
    dense = p["detail"]["dense"]
    ood = dense.get("ood_accuracy_by_layer", {})
    sizes = ", ".join(f"{k} {v}" for k, v in p["sizes"].items())
    return Section(
        "probes",
        title,
        [
            f"Inputs: the top {p['k']} global F* features, {p['k']} random active latents "
            f"(mean over {p['detail']['random']['draws']} draws; interval = 2.5–97.5 % of "
            f"draws), the residual at layer {dense['layer']} (best on validation) and the "
            "projection on the refusal direction. Out of distribution: the wrapped prompts "
            "(all harmful; accuracy = share called harmful) against the harmless test prompts "
            f"(AUROC). Prompts: {sizes}.",
        ],
        [Markup(fg.div(fg.probe_bars(p)))],
        [
            Table(["probe", "accuracy", "AUROC", "OOD accuracy", "95%", "OOD AUROC"], rows),
            Table(["feature"], [[f] for f in features(p["features"])], caption="Probe features"),
            Table(
                ["layer", "val accuracy", "val AUROC", "val −log-loss", "OOD accuracy"],
                [[layer, *v, ood.get(layer)] for layer, v in dense["val_by_layer"].items()],
                caption="The residual probe at every layer (chosen on validation; OOD accuracy "
                "shown, not used to choose).",
            ),
        ],
    )
