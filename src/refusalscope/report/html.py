"""The report: one self-contained HTML page from a run's outputs, rendered from Jinja2
templates (``report/templates``), plots by plotly (its JS inlined once), every text
escaped, no path of the machine shown."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from torch import Tensor

from .analyses import categories_section, jailbreak_section, probes_section
from .ground_truth import circuit_section, faithfulness_section
from .judges import judges_section
from .sections import (
    capability_section,
    direction_section,
    induction_section,
    sweep_section,
)
from .sections import (
    jailbreak_section as method_jailbreak_section,
)
from .summary import findings, headlines, what_was_run
from .tables import Feature, Section, Table, fmt, interval, scrub_paths
from .views import GENERATIONS_PER_GROUP, card_view, generation_groups, token_maps

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class ReportInputs:
    """What the report shows: ``results.json`` and the files beside it."""

    summary: Mapping[str, Any]
    generations: Sequence[Mapping[str, Any]] = ()
    cards: Sequence[Mapping[str, Any]] = ()
    """``cards.json``'s cards (empty: the explain stage did not run)."""
    examples: Sequence[Mapping[str, Any]] = ()
    """``cards.json``'s token-level LA-IG examples."""
    faithfulness: Mapping[str, Tensor] | None = None
    circuit_graph: Mapping[str, Any] | None = None


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["interval"] = interval
    env.filters["as_feature"] = lambda pair: Feature(int(pair[0]), int(pair[1]))
    env.tests["feature"] = lambda v: isinstance(v, Feature)
    return env


@cache
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def render_report(inputs: ReportInputs | Mapping[str, Any]) -> str:
    """The report as one HTML string (a bare ``results.json`` mapping renders too)."""
    x = inputs if isinstance(inputs, ReportInputs) else ReportInputs(summary=inputs)
    r = scrub_paths(dict(x.summary))
    cards = [card_view(c) for c in x.cards]
    ids = {c["id"] for c in cards}
    sections = _sections(r, x, ids)
    page = (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=f"refusalscope — {r['model']['name']}",
            subtitle=_subtitle(r),
            summary={"run": what_was_run(r), "findings": findings(r), "headlines": headlines(r)},
            sections=sections,
            card_ids=ids,
            cards=cards,
            cards_skipped=(r.get("explain") or {}).get("skipped", "not in this output"),
            corpus_text=_corpus_text(r.get("explain") or {}),
            token_maps=token_maps(x.examples),
            generations=generation_groups(x.generations),
            per_group=GENERATIONS_PER_GROUP,
            provenance=_provenance(r),
            plotly_js=Markup(_plotly_js()) if any(s.figures for s in sections) else "",
        )
    )
    return page


def _sections(r: Mapping[str, Any], x: ReportInputs, ids: set[str]) -> list[Section]:
    return [
        direction_section(r),
        method_jailbreak_section(r),
        judges_section(r.get("judges")),
        sweep_section(r),
        capability_section(r),
        induction_section(r),
        categories_section(r.get("categories")),
        jailbreak_section(r.get("jailbreak_analysis")),
        probes_section(r.get("probes")),
        faithfulness_section(r.get("faithfulness"), x.faithfulness, ids),
        circuit_section(r.get("circuit"), x.circuit_graph, ids),
    ]


def _subtitle(r: Mapping[str, Any]) -> str:
    v = r.get("versions") or {}
    git = (v.get("git_hash") or "")[:10]
    refusal = r.get("refusal_token", {}).get("text")
    parts = [
        f"{r['model']['n_layers']} layers, width {r['model']['d_model']}",
        f"refusal token {json.dumps(refusal, ensure_ascii=False)}" if refusal is not None else "",
        f"refusalscope {v.get('refusalscope', '?')}" + (f" ({git})" if git else ""),
    ]
    return " · ".join(p for p in parts if p)


def _corpus_text(e: Mapping[str, Any]) -> str:
    c = e.get("corpus") or {}
    if not c:
        return "the run's corpus"
    parts = [f"{c.get('prompts', 0)} prompts", f"{c.get('responses', 0)} base-model responses"]
    if c.get("text"):
        parts.append(f"{c['text']} plain-text passages")
    return ", ".join(parts) + f" ({c.get('tokens', 0)} tokens)"


def _provenance(r: Mapping[str, Any]) -> dict[str, Any]:
    v = r.get("versions") or {}
    stages = r.get("stages") or {}
    return {
        "version": v.get("refusalscope", "?"),
        "versions": Table(["package", "version"], [[k, val] for k, val in v.items()]),
        "stages": Table(
            ["stage", "seconds", "loaded from cache"],
            [[k, s.get("seconds"), s.get("cached")] for k, s in stages.items()],
        ),
        "config": json.dumps(r.get("config") or {}, indent=2, ensure_ascii=False),
    }
