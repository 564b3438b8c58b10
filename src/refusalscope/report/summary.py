"""The top of the report in words: what was run, the headline numbers with their
intervals, and what they mean."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .tables import METHOD_LABELS, interval, pct, pct_interval

BASELINES = ("cossim", "actdiff", "ap")


def _pct_ci(cell: Mapping[str, Any]) -> str:
    return f"{pct(cell['complied'])} {pct_interval(cell.get('complied_ci95'))}".strip()


def what_was_run(r: Mapping[str, Any]) -> str:
    m, p, st = r["model"], r["prompts"], r["steering"]
    config = r.get("config") or {}
    saes = config.get("saes", {})
    organism = m.get("organism", (config.get("model") or {}).get("path", "") is None)
    sae_text = (
        f"SAEs of the sae_lens release {saes['release']}"
        if saes.get("release")
        else "its own SAEs"
        if organism
        else "local SAEs"
    )
    return (
        f"refusalscope ran the method of Yeo et al. (2025) on {'the ' if organism else ''}"
        f"{m['name']} ({m['n_layers']} "
        f"layers, width {m['d_model']}) with {sae_text}: {p.get('harmful_train', '—')} harmful "
        f"and {p.get('harmless_train', '—')} harmless train prompts chose the refusal direction "
        f"and the features; everything below is measured on {p.get('harmful_test', '—')} held-out "
        f"harmful and {p.get('harmless_test', '—')} harmless test prompts, clamping K* = "
        f"{st['k_star']} features per prompt to c = {st['c']} × their value."
        + (
            " This is one build of the organism: a claim about the method rests on several "
            "seeds (refusalscope replicate)."
            if organism
            else ""
        )
    )


def findings(r: Mapping[str, Any]) -> list[str]:
    """The headline results as sentences (only those the run has)."""
    jb = r["jailbreak"]
    out = []
    base, fstar = jb.get("base"), jb.get("fstar")
    if base and fstar:
        baselines = [m for m in BASELINES if m in jb]
        best = max(baselines, key=lambda m: jb[m]["complied"]) if baselines else None
        text = (
            f"The base model complied with {pct(base['complied'])} of the harmful test prompts. "
            f"Clamping the features LA-IG picked for each prompt (F*) made it comply with "
            f"{_pct_ci(fstar)}"
        )
        if "ablate_direction" in jb:
            text += f"; ablating the refusal direction itself: {_pct_ci(jb['ablate_direction'])}"
        if best is not None:
            p = r.get("jailbreak_vs_fstar", {}).get(best, {})
            text += f"; the strongest baseline, {METHOD_LABELS[best]}, {_pct_ci(jb[best])}" + (
                f" (exact McNemar p = {p['p_value']:.2g} against F*)" if p else ""
            )
        text += f". Degenerate text under F*: {pct(fstar['degenerate'])}. "
        out.append(text + _verdict(r))
    cap = r.get("capability", {})
    if "base" in cap and "fstar" in cap:
        out.append(
            f"Capability cost: cross-entropy on the base model's own harmless answers went from "
            f"{cap['base']['ce_responses']:.3f} to {cap['fstar']['ce_responses']:.3f} nats per "
            f"token with F* clamped, and {pct(cap['fstar']['harmless_complied'])} of harmless "
            "prompts were still answered."
        )
    out += _ground_truth_findings(r)
    return out


def _verdict(r: Mapping[str, Any]) -> str:
    """What the jailbreak numbers mean: F* against each method by the paired exact test
    (a difference is claimed only at p < 0.05)."""
    paired = r.get("jailbreak_vs_fstar", {})
    better, worse, same = [], [], []
    for m, p in paired.items():
        if m == "base":
            continue
        name = METHOD_LABELS.get(m, m)
        if p["p_value"] >= 0.05:
            same.append(name)
        elif p["reference_only"] > p["other_only"]:
            better.append(name)
        else:
            worse.append(name)
    parts = []
    if better:
        parts.append(f"jailbreaks more prompts than {_join(better)}")
    if worse:
        parts.append(f"jailbreaks fewer prompts than {_join(worse)}")
    if same:
        parts.append(f"is not measurably different from {_join(same)}")
    if not parts:
        return ""
    n = r["jailbreak"]["fstar"]["n"]
    return f"On these {n} prompts F* " + "; it ".join(parts) + " (exact McNemar test, p < 0.05)."


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _ground_truth_findings(r: Mapping[str, Any]) -> list[str]:
    out = []
    f = r.get("faithfulness") or {}
    if "spearman_pool" in f:
        s = f["spearman_pool"]["fstar"]
        p = f["prefilter_recall"]
        out.append(
            f"Is the attribution right? Against exact patching of each latent, LA-IG's ranking "
            f"of the candidate pool has Spearman {s['mean']:.2f} {interval(s['ci95'])} per "
            f"prompt (CosSim's {f['spearman_pool']['cossim']['mean']:.2f}, ActDiff's "
            f"{f['spearman_pool']['actdiff']['mean']:.2f}); the candidate pre-filter keeps "
            f"{pct(p['mean'])} {pct_interval(p.get('ci95'))} of the exact top-{p['k']} over all "
            "latents."
        )
    c = r.get("categories") or {}
    if "checks" in c:
        d = c["checks"]["transfer_diagonal"]
        out.append(
            f"Harm categories: {len(c['common'])} features are shared by every category. "
            f"Clamping a category's own specific features {_compare(d['difference_ci95'])} "
            "its own prompts than other categories' specific features do (diagonal "
            f"{d['diagonal']} vs off-diagonal {d['off_diagonal']}, difference "
            f"{d['difference']} {interval(d['difference_ci95'])})."
        )
    j = r.get("jailbreak_analysis") or {}
    if "difference" in j and j["difference"].get("refusal_drop") is not None:
        d = j["difference"]
        out.append(
            "Jailbreak prompts that work suppress the refusal features "
            f"{_compare(d['refusal_drop_ci95'], 'more', 'less')} than those that fail "
            f"(difference in relative drop {d['refusal_drop']:.2f} "
            f"{interval(d['refusal_drop_ci95'])})."
        )
    return out


def _compare(ci: list[float] | None, more: str = "jailbreaks more of", less: str = "") -> str:
    """How a paired difference reads, from its interval: only a sign the interval is sure
    of is claimed."""
    if ci and ci[0] > 0:
        return more
    if ci and ci[1] < 0 and less:
        return less
    if more == "jailbreaks more of":
        return "does not measurably jailbreak more of" if ci else "was compared on"
    return "not measurably " + more if ci else more


def headlines(r: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(what, number, what it means)`` rows for the summary table."""
    jb, out = r["jailbreak"], []
    if "fstar" in jb:
        out.append(
            ("F* jailbreak", _pct_ci(jb["fstar"]), "harmful test prompts answered with F* clamped")
        )
    if "ablate_direction" in jb:
        out.append(
            (
                "direction ablation",
                _pct_ci(jb["ablate_direction"]),
                "the upper reference: r̂ removed",
            )
        )
    for m in BASELINES:
        if m in jb:
            out.append(
                (f"{METHOD_LABELS[m]} jailbreak", _pct_ci(jb[m]), "a baseline's feature set")
            )
    f = r.get("faithfulness") or {}
    if "spearman_pool" in f:
        s = f["spearman_pool"]["fstar"]
        out.append(
            (
                "LA-IG vs exact",
                f"{s['mean']:.2f} {interval(s['ci95'])}",
                "Spearman of F*'s ranking with exact patching, per prompt",
            )
        )
    return out
