"""What a report section is made of (paragraphs, figures, tables whose cells may name a
feature) and the formatting every section shares. The templates render these."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from markupsafe import Markup

from ..analysis.cards import card_id

METHOD_LABELS = {
    "base": "base model",
    "fstar": "F*",
    "cossim": "CosSim",
    "actdiff": "ActDiff",
    "ap": "AP",
    "atp": "AtP",
    "ablate_direction": "ablate r̂",
    "add_direction": "add r̂",
}
"""How the report names each method (keys as in ``results.json``)."""

__all__ = ["card_id"]


class Feature(NamedTuple):
    """A table cell naming one SAE latent: rendered as a link to its card."""

    layer: int
    latent: int

    @property
    def anchor(self) -> str:
        return card_id(self.layer, self.latent)

    def __str__(self) -> str:
        return feature_name(self.layer, self.latent)


def feature_name(layer: int, latent: int) -> str:
    """``L5/893``: layer 5's SAE, latent 893."""
    return f"L{layer}/{latent}"


def features(pairs: Sequence[Sequence[int]]) -> list[Feature]:
    return [Feature(int(p[0]), int(p[1])) for p in pairs]


@dataclass
class Table:
    header: Sequence[str]
    rows: Sequence[Sequence[Any]]
    best: int | None = None
    """Row highlighted (e.g. the chosen layer)."""
    caption: str | None = None


@dataclass
class Section:
    """One section of the report: an anchored heading, text, plots and tables."""

    id: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    figures: list[Markup] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    skipped: str | None = None
    blocks: list[tuple[str, Any]] = field(default_factory=list)
    """Extra blocks rendered after the tables by name (``tokens``: token heat maps)."""


def fmt(v: Any) -> str:
    """A cell as text: floats to 3 decimals, None as a dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def pct(v: float | None) -> str:
    """A rate as a whole percentage (``91 %``; a dash when undefined)."""
    return "—" if v is None else f"{100 * v:.0f} %"


def pct_interval(ci: Sequence[float] | None) -> str:
    """``[84 %, 95 %]`` (empty when there is no interval)."""
    return f"[{pct(ci[0])}, {pct(ci[1])}]" if ci else ""


def num_key(s: str) -> tuple:
    try:
        return (0, float(s))
    except ValueError:
        return (1, s)


def interval(ci: Sequence[float] | None) -> str:
    """``[low, high]`` (brackets: a dash would read as a minus sign next to negatives)."""
    return "" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def mean_interval(d: Mapping[str, Any] | None) -> str:
    """``0.91 [0.85, 0.97]`` from ``{"mean", "ci95"}`` (a dash when undefined)."""
    if not d or d.get("mean") is None:
        return "—"
    return f"{d['mean']:.2f} {interval(d.get('ci95'))}".strip()


def nested(d: Mapping[str, Mapping[str, Any]], row_label: str, caption: str | None = None) -> Table:
    cols = sorted({k for v in d.values() for k in v}, key=num_key)
    rows = [[name, *(v.get(c, "") for c in cols)] for name, v in d.items()]
    return Table([row_label, *cols], rows, caption=caption)


def skipped(id: str, title: str, section: Mapping[str, Any] | None) -> Section | None:
    """The section saying why it is empty when it is absent or was skipped; else None."""
    if section is None:
        return Section(id, title, skipped="not in this output")
    if "skipped" in section:
        return Section(id, title, skipped=section["skipped"])
    return None


_ABSOLUTE = re.compile(r"^(~|/|[A-Za-z]:[\\/])")


def scrub_paths(value: Any) -> Any:
    """Every string that is an absolute path (or ``~/…``) replaced by ``…/<last part>``:
    a shared report must not show the machine's folders."""
    if isinstance(value, str):
        if _ABSOLUTE.match(value) and "\n" not in value:
            name = re.split(r"[\\/]", value.rstrip("/\\"))[-1]
            return f"…/{name}" if name else "…"
        return value
    if isinstance(value, Mapping):
        return {k: scrub_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_paths(v) for v in value]
    return value
