"""The report's judges section: every configured judge's jailbreak rates and how the
judges agree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .tables import METHOD_LABELS, Section, Table, interval

_NOT_RUN = 'only the run\'s own judge was used (set judges, e.g. judges = ["harmbench"])'


def judges_section(j: Mapping[str, Any] | None) -> Section:
    """Per judge, the jailbreak rate of every method with its interval; then, per pair of
    judges, how often they agree and Cohen's κ on complied-or-not."""
    if not j:
        return Section("judges", "Judges and their agreement", skipped=_NOT_RUN)
    names = j["names"]
    rates = []
    for name in names:
        for method, v in (j["tables"].get(name) or {}).get("jailbreak", {}).items():
            rates.append([name, METHOD_LABELS.get(method, method), v["n"], v["complied"],
                          interval(v.get("complied_ci95"))])  # fmt: skip
    pairs = [
        [pair, a["n"], a["agree"], a["kappa"], _confusion(a["confusion"])]
        for pair, a in j["agreement"].items()
    ]
    return Section(
        "judges",
        "Judges and their agreement",
        [
            f"Every generation was judged by {', '.join(names)}; the first is the run's own "
            "judge, on which the method's choices rest. Classifier judges that ask whether "
            "a response is harmful (HarmBench, Llama Guard, StrongREJECT) judge only "
            "generations from harmful prompts. κ is Cohen's kappa on complied against the "
            "rest, over the generations both judges judged; the generations on which they "
            "disagree are flagged in generations.jsonl (judges_disagree).",
        ],
        [],
        [
            Table(
                ["judge", "method", "n", "complied", "95% CI"],
                rates,
                caption="Jailbreak rate on the harmful test prompts, per judge.",
            ),  # fmt: skip
            Table(["judges", "n", "agree", "Cohen's κ", "confusion (first → second)"], pairs),
        ],
    )


def _confusion(c: Mapping[str, Mapping[str, int]]) -> str:
    return "; ".join(f"{a} → {b}: {n}" for a, row in c.items() for b, n in row.items())
