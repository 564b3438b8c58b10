"""The HTML report: every section from a run summary, text escaped, the chosen layer marked."""

from __future__ import annotations

import re

from refusalscope.report.html import render_report

CELL = {"n": 4, "refused": 0.25, "complied": 0.5, "degenerate": 0.25}


def summary() -> dict:
    return {
        "model": {"name": "<script>alert(1)</script>", "n_layers": 2, "d_model": 8},
        "refusal_token": {"id": 5, "text": " I"},
        "prompts": {"harmful_test": 4},
        "direction": {
            "layer": 1,
            "sweep": {
                "0": {"jailbreak": 0.0, "harmless_ok": 1.0},
                "1": {"jailbreak": 0.75, "harmless_ok": 1.0},
            },
            "base": {"jailbreak": 0.0},
        },
        "steering": {"c": -3.0, "k_star": 2, "from_sweep": True},
        "jailbreak": {"base": {**CELL, "complied_ci95": [0.15, 0.85]}, "fstar": CELL},
        "jailbreak_vs_fstar": {"base": {"reference_only": 2, "other_only": 0, "p_value": 0.5}},
        "capability": {"base": {"ce_responses": 1.5, "ce_text": None, "harmless_complied": 1.0}},
        "induction": {"fstar": {"0.0": 0.0, "10.0": 1.0}},
        "sweep": {"-3.0": {"2": CELL}},
        "features": {"global": [[1, 7, 0.5], [0, 3, 0.25]]},
        "stages": {"prompts": {"seconds": 1.0, "cached": True}},
    }


def test_report_shows_every_section_and_escapes_text():
    page = render_report(summary())
    assert "<script>" not in page and "&lt;script&gt;" in page
    for heading in (
        "Refusal direction",
        "Jailbreak",
        "Capability cost",
        "Refusal induction",
        "Clamp sweep",
        "Global F* (top 2)",
        "Stages",
    ):
        assert heading in page
    assert '<tr class="best"><td>1</td>' in page  # the chosen layer
    assert "[0.15, 0.85]" in page  # the interval
    assert "<td>—</td>" in page  # no CE on text
    assert len(re.findall("<table>", page)) == 8
