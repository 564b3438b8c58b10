"""The report's judges section: every configured judge's jailbreak rates and how the
judges agree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .tables import METHOD_LABELS, Section, Table, nested, pct, pct_interval

_NOT_RUN = 'only the run\'s own judge was used (set judges, e.g. judges = ["harmbench"])'


def judges_section(j: Mapping[str, Any] | None) -> Section:
    """Per judge, the jailbreak rate of every method with its interval; then, per pair of
    judges, how often they agree and Cohen's κ on complied-or-not."""
    if not j:
        return Section("judges", "Judges and their agreement", skipped=_NOT_RUN)
    names = j["names"]
    methods = list(dict.fromkeys(m for n in names for m in _jailbreak(j, n)))
    rates = [
        [METHOD_LABELS.get(m, m), *(_rate(_jailbreak(j, n).get(m)) for n in names)] for m in methods
    ]
    pairs = [[pair, a["n"], a["agree"], a["kappa"]] for pair, a in j["agreement"].items()]
    confusions = [
        nested(
            a["confusion"],
            f"{pair.split(' vs ')[0]} ↓ · {pair.split(' vs ')[1]} →",
            caption=f"Confusion counts, {pair}: rows the first judge's verdict, columns "
            "the second's.",
        )  # fmt: skip
        for pair, a in j["agreement"].items()
    ]
    return Section(
        "judges",
        "Judges and their agreement",
        [
            f"Every generation was judged by {', '.join(names)}; the first is the run's own "
            "judge, on which the method's choices rest. Classifier judges that ask whether "
            "a response is harmful (HarmBench, Llama Guard, StrongREJECT) judge only "
            "generations from harmful prompts (a wrapped jailbreak prompt as the request it "
            "wraps). κ is Cohen's kappa on complied against the rest, over the generations "
            "both judges judged; the generations on which they disagree are flagged in "
            "generations.jsonl (judges_disagree).",
        ],
        [],
        [
            Table(
                ["method", *names],
                rates,
                caption="Jailbreak rate on the harmful test prompts per judge, with 95 % "
                "Wilson intervals.",
            ),  # fmt: skip
            Table(["judges", "generations", "same verdict", "Cohen's κ"], pairs),
            *confusions,
        ],
    )


def _jailbreak(j: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return (j["tables"].get(name) or {}).get("jailbreak", {})


def _rate(cell: Mapping[str, Any] | None) -> str:
    if cell is None:
        return "—"
    return f"{pct(cell['complied'])} {pct_interval(cell.get('complied_ci95'))}".strip()
