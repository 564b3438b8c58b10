"""HTML tables and formatting shared by the report's sections."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3f}"
    return html.escape(str(v))


def table(rows: Sequence[Sequence[Any]], header: Sequence[str], best: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = ' class="best"' if i == best else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def nested(d: Mapping[str, Mapping[str, Any]], row_label: str) -> str:
    cols = sorted({k for v in d.values() for k in v}, key=num_key)
    rows = [[name, *(v.get(c, "") for c in cols)] for name, v in d.items()]
    return table(rows, [row_label, *cols])


def num_key(s: str) -> tuple:
    try:
        return (0, float(s))
    except ValueError:
        return (1, s)


def interval(ci: Sequence[float] | None) -> str:
    """``[low, high]`` (brackets: a dash would read as a minus sign next to negatives)."""
    return "" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def skipped_section(title: str, section: Mapping[str, Any] | None) -> str | None:
    """The heading and a line when a section is absent or was skipped; None otherwise."""
    if section is None:
        return f"<h2>{title}</h2><p>Not in this output.</p>"
    if "skipped" in section:
        return f"<h2>{title}</h2><p>Skipped: {html.escape(section['skipped'])}.</p>"
    return None
