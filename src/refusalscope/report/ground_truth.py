"""The report's plain sections for exact patching (faithfulness) and the F* circuit."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from .tables import interval, skipped_section, table

METHOD_NAMES = {
    "fstar": "F* (LA-IG, pre-filtered pool)",
    "ap": "AP (LA-IG, every latent)",
    "atp": "AtP (gradient at the clean run, no IG)",
    "cossim": "CosSim (decoder cosine)",
    "actdiff": "ActDiff (activation difference)",
}


def _mean(d: Mapping[str, Any] | None) -> list[Any]:
    return [None, ""] if not d else [d.get("mean"), interval(d.get("ci95"))]


def faithfulness_section(f: Mapping[str, Any] | None) -> str:
    title = "Is the attribution right? Exact patching"
    if (skip := skipped_section(title, f)) is not None:
        return skip
    assert f is not None
    rows = [
        [
            METHOD_NAMES.get(m, m),
            *_mean(f["spearman"][m]),
            *_mean(f.get("spearman_pool", {}).get(m)),
            *_mean(f["precision_at_k"][m]),
            f["joint_effect"][m],
            interval(f["joint_effect_ci95"][m]),
        ]
        for m in f["spearman"]
    ]
    variants = [
        [name + (" (run's)" if v["default"] else ""), *_mean(v["spearman"])]
        + [*_mean(v.get("minus_default")), v["seconds"]]
        for name, v in f["variants"].items()
    ]
    p = f["prefilter_recall"]
    ref = f["joint_effect"]
    return "".join(
        [
            f"<h2>{title}</h2>",
            f"<p>Exact effect Δm of moving one latent from its clean to its counterfactual "
            f"value at the prompt positions, on {f['n_prompts']} harmful test prompts, for "
            f"{f['n_evaluated']} latents (the {f['n_pool']}-latent candidate pool and every "
            f"latent a method selected). Spearman per prompt (mean, 95% CI over prompts); "
            f"precision@K* against the exact top-{f['k']}; joint Δm of the method's whole "
            f"set (exact top-{f['k']}: {ref['exact_top']}; the whole counterfactual: "
            f"{ref['direction']}).</p>",
            table(
                rows,
                [
                    "method",
                    "Spearman",
                    "95%",
                    "Spearman (pool)",
                    "95%",
                    "precision@K*",
                    "95%",
                    "joint Δm",
                    "95%",
                ],
            ),
            "<p>LA-IG variants on the candidate pool (mixing / Riemann rule / steps), with "
            "the paired difference from the run's setting and the cost.</p>",
            table(variants, ["variant", "Spearman", "95%", "− run's", "95%", "seconds"]),
            f"<p>Pre-filter recall: on {p['n_prompts']} prompts every latent that moves was "
            f"patched; the candidate pool holds {p['mean']} {interval(p.get('ci95'))} of the "
            f"exact top-{p['k']} over all latents.</p>",
        ]
    )


def circuit_section(c: Mapping[str, Any] | None) -> str:
    title = "Upstream → downstream"
    if (skip := skipped_section(title, c)) is not None:
        return skip
    assert c is not None
    top = sorted(c["edges"], key=lambda e: -abs(e["measured"]))[:10]
    rows = [[str(e["from"]), str(e["to"]), e["predicted"], e["measured"]] for e in top]
    drop = c["relative_drop"]
    drop_text = (
        f"{drop} {interval(c['relative_drop_ci95'])} over {c['n_prompts']} prompts"
        if drop is not None
        else f"not measurable: no prompt's F* has both harm and refusal features "
        f"({c['n_without_both_roles']} prompts)"
    )
    return "".join(
        [
            f"<h2>{title}</h2>",
            f"<p>Rule: {html.escape(c['rule'])}</p>",
            f"<p>Refusal features' relative drop when the harm features are clamped "
            f"(c = {c['c']}) from their onset: {drop_text} (authors, Gemma-2: 0.45).</p>",
            f"<p>{len(c['edges'])} edges among the {c['k_star']} global F* latents (earlier "
            f"layer → later layer): gradient prediction vs measured patch of the earlier "
            f"latent alone, Spearman {c['edge_spearman']}, sign agreement "
            f"{c['edge_sign_agreement']}. Strongest measured:</p>",
            table(rows, ["from (layer, latent)", "to", "predicted", "measured"]),
        ]
    )
