"""The report's sections for exact patching (faithfulness) and the F* circuit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from markupsafe import Markup
from torch import Tensor

from . import figures as fg
from .figures_features import circuit_graph, faithfulness_scatter
from .tables import Section, Table, features, interval, mean_interval, skipped

METHOD_NAMES = {
    "fstar": "F* (LA-IG, pre-filtered pool)",
    "ap": "AP (LA-IG, every latent)",
    "atp": "AtP (gradient at the clean run, no IG)",
    "cossim": "CosSim (decoder cosine)",
    "actdiff": "ActDiff (activation difference)",
}


def faithfulness_section(
    f: Mapping[str, Any] | None, tensors: Mapping[str, Tensor] | None, cards: set[str]
) -> Section:
    title = "Is the attribution right? Exact patching"
    if (skip := skipped("faithfulness", title, f)) is not None:
        return skip
    assert f is not None
    rows = [
        [METHOD_NAMES.get(m, m), mean_interval(f["spearman"][m]),
         mean_interval(f.get("spearman_pool", {}).get(m)), mean_interval(f["precision_at_k"][m]),
         f["joint_effect"][m], interval(f["joint_effect_ci95"][m])]
        for m in f["spearman"]
    ]  # fmt: skip
    variants = [
        [name + (" (run's)" if v["default"] else ""), mean_interval(v["spearman"]),
         mean_interval(v.get("minus_default")), v["seconds"]]
        for name, v in f["variants"].items()
    ]  # fmt: skip
    p, ref = f["prefilter_recall"], f["joint_effect"]
    figs = [Markup(fg.div(faithfulness_scatter(tensors, cards), 420))] if tensors else []
    return Section(
        "faithfulness",
        title,
        [
            f"Exact effect Δm of moving one latent from its clean to its counterfactual value "
            f"at the prompt positions, on {f['n_prompts']} harmful test prompts, for "
            f"{f['n_evaluated']} latents (the {f['n_pool']}-latent candidate pool and every "
            "latent a method selected). Spearman per prompt (mean and 95 % interval over "
            f"prompts); precision@K* against the exact top-{f['k']}; joint Δm of the method's "
            f"whole set (exact top-{f['k']}: {ref['exact_top']}; the whole counterfactual: "
            f"{ref['direction']}).",
            f"Pre-filter recall: on {p['n_prompts']} prompts every latent that moves was "
            f"patched; the candidate pool holds {p['mean']} {interval(p.get('ci95'))} of the "
            f"exact top-{p['k']} over all latents.",
        ],
        figs,
        [
            Table(
                ["method", "Spearman", "Spearman (pool)", "precision@K*", "joint Δm", "95%"], rows
            ),
            Table(
                ["LA-IG variant", "Spearman", "− run's", "seconds"],
                variants,
                caption="Mixing / Riemann rule / steps, each against the run's setting.",
            ),
        ],
    )


def circuit_section(
    c: Mapping[str, Any] | None, graph: Mapping[str, Any] | None, cards: set[str]
) -> Section:
    title = "Upstream → downstream: the F* circuit"
    if (skip := skipped("circuit", title, c)) is not None:
        return skip
    assert c is not None
    top = sorted(c["edges"], key=lambda e: -abs(e["measured"]))[:10]
    rows = [[*features([e["from"], e["to"]]), e["predicted"], e["measured"]] for e in top]
    drop = c["relative_drop"]
    drop_text = (
        f"{drop} {interval(c['relative_drop_ci95'])} over {c['n_prompts']} prompts"
        if drop is not None
        else "not measurable: no prompt's F* has both harm and refusal features "
        f"({c['n_without_both_roles']} prompts)"
    )
    figs = [Markup(fg.div(circuit_graph(graph, cards), 420))] if graph else []
    return Section(
        "circuit",
        title,
        [
            c["rule"],
            f"Refusal features' relative drop when the harm features are clamped (c = "
            f"{c['c']}) from their onset: {drop_text} (authors, Gemma-2: 0.45).",
            f"{len(c['edges'])} edges among the {c['k_star']} global F* latents (earlier layer "
            "→ later layer): gradient prediction against the measured patch of the earlier "
            f"latent alone, Spearman {c['edge_spearman']}, sign agreement "
            f"{c['edge_sign_agreement']}.",
        ],
        figs,
        [Table(["from", "to", "predicted", "measured"], rows, caption="Strongest measured edges")],
    )
