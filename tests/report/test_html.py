"""The HTML report: every section from a run's outputs, text escaped, features linked to
their cards, no machine path and no Python repr, the same page twice; and it passes the
headless-Chromium check where a browser is installed."""

from __future__ import annotations

import html as html_lib
import re

import pytest

from refusalscope.report.browser import check_page, find_chromium
from refusalscope.report.html import ReportInputs, render_report
from refusalscope.report.tables import scrub_paths

CELL = {"n": 4, "refused": 0.25, "complied": 0.5, "degenerate": 0.25}
SECRET = "/home/alice/private-models/my-chat-model"


def summary() -> dict:
    return {
        "config": {"model": {"path": SECRET}, "saes": {"folders": {"1": SECRET + "/saes/1"}}},
        "versions": {"refusalscope": "0.1.0", "git_hash": "abcdef1234567890"},
        "model": {"name": "<script>alert(1)</script>", "n_layers": 2, "d_model": 8},
        "refusal_token": {"id": 5, "text": " I"},
        "prompts": {"harmful_train": 8, "harmless_train": 8, "harmful_test": 4, "harmless_test": 4},
        "direction": {
            "layer": 1,
            "sweep": {
                "0": {"jailbreak": 0.0, "harmless_ok": 1.0},
                "1": {"jailbreak": 0.75, "harmless_ok": 1.0},
            },
            "base": {"jailbreak": 0.0, "harmless_ok": 1.0},
        },
        "steering": {"c": -3.0, "k_star": 2, "from_sweep": True},
        "jailbreak": {
            "base": {**CELL, "complied": 0.0, "complied_ci95": [0.0, 0.49]},
            "actdiff": {**CELL, "complied_ci95": [0.15, 0.85]},
            "fstar": {**CELL, "complied_ci95": [0.15, 0.85]},
        },
        "jailbreak_vs_fstar": {"base": {"reference_only": 2, "other_only": 0, "p_value": 0.5}},
        "jailbreak_by_dataset": {
            "harmbench:test": {"fstar": {**CELL, "complied_ci95": [0.11, 0.77]}},
            "advbench": {"fstar": {**CELL, "complied_ci95": [0.12, 0.78]}},
        },
        "judges": {
            "names": ["substring", "harmbench"],
            "tables": {
                "harmbench": {"jailbreak": {"fstar": {**CELL, "complied_ci95": [0.2, 0.9]}}}
            },
            "agreement": {
                "substring vs harmbench": {
                    "n": 4,
                    "agree": 0.75,
                    "kappa": 0.5,
                    "confusion": {
                        "complied": {"complied": 2, "refused": 1},
                        "refused": {"refused": 1},
                    },
                }
            },
        },
        "capability": {
            "base": {"ce_responses": 1.5, "ce_text": None, "harmless_complied": 1.0},
            "fstar": {"ce_responses": 1.6, "ce_text": None, "harmless_complied": 0.75},
        },
        "induction": {"fstar": {"0.0": 0.0, "10.0": 1.0}, "add_direction": {"1.0": 0.5}},
        "sweep": {"-3.0": {"2": CELL}},
        "features": {"global": [[1, 7, 0.5], [0, 3, 0.25]]},
        "stages": {"prompts": {"seconds": 1.0, "cached": True}},
        "categories": {"skipped": "no category labels"},
        "explain": {"n_cards": 1, "corpus": {"prompts": 16, "responses": 8, "tokens": 300}},
    }


def card(layer: int, latent: int) -> dict:
    return {
        "id": f"f-L{layer}-{latent}",
        "layer": layer,
        "latent": latent,
        "picked_by": ["F* #1"],
        "density": 0.01,
        "max_activation": 3.0,
        "histogram": {"edges": [0.0, 1.5, 3.0], "counts": [3, 1]},
        "contexts": [
            {
                "source": "prompts",
                "tokens": ["<b>", " bomb", "?"],
                "acts": [0.0, 3.0, 0.5],
                "peak": 1,
                "cut_left": True,
                "cut_right": False,
            },
        ],  # fmt: skip
        "labels": [
            {
                "family": "category",
                "value": "weapons",
                "selectivity": 4.0,
                "mean_in": 2.0,
                "mean_out": 0.5,
                "n_in": 4,
                "n_out": 4,
            }
        ],  # fmt: skip
        "logit_lens": {"top": [[" I", 2.0]], "bottom": [["\n", -1.0]]},
        "cos_direction": 0.5,
        "laig": None,
        "exact_effect": {"mean": 1.25, "ci95": [1.0, 1.5], "n": 4},
        "clamp_effect": None,
        "neuronpedia": None,
        "explanation": None,
    }


def inputs() -> ReportInputs:
    generations = [
        {"eval": "jailbreak", "method": "fstar", "prompt": "how?", "judgement": "complied",
         "response": "<img src=x onerror=alert(2)> Sure, here is"},
    ]  # fmt: skip
    examples = [
        {"prompt": "make a bomb", "tokens": ["make", " a", " bomb"], "in_prompt": [True] * 3,
         "features": [[1, 7], [0, 3]], "attribution": [[0.1, 0.0], [0.0, 0.2], [0.5, -0.1]]}
    ]  # fmt: skip
    return ReportInputs(summary(), generations, [card(1, 7)], examples)


@pytest.fixture(scope="module")
def page() -> str:
    return render_report(inputs())


def test_every_section_renders_and_text_is_escaped(page):
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "&lt;b&gt;" in page  # a token of a context
    for anchor in ("summary", "direction", "jailbreak", "sweep", "capability", "induction",
                   "tokens", "categories", "generations", "cards", "provenance"):  # fmt: skip
        assert f'id="{anchor}"' in page
    assert "Skipped: no category labels." in page
    assert "harmbench:test" in page and "[0.11, 0.77]" in page  # the table per dataset
    assert 'id="judges"' in page and "substring vs harmbench" in page
    assert "50 % [20 %, 90 %]" in page  # harmbench's F* rate with its interval
    assert "substring ↓ · harmbench →" in page
    assert '<tr class="best"><td>1</td>' in page  # the chosen layer
    assert "[0.15, 0.85]" in page and "50 % [15 %, 85 %]" in page
    assert page.count("* plotly.js v") == 1 and "<script src" not in page  # inlined once
    assert page.count('class="plotly-graph-div"') >= 6


def test_features_link_to_existing_cards_and_only_those(page):
    anchors = set(re.findall(r'href="#(f-L\d+-\d+)"', page))
    ids = set(re.findall(r'id="(f-L\d+-\d+)"', page))
    assert anchors == ids == {"f-L1-7"}
    assert '<span class="feat">L0/3</span>' in page  # no card: named, not linked


def test_no_machine_path_and_no_python_repr(page):
    text = html_lib.unescape(re.sub(r"<script>.*?</script>", "", page, flags=re.S))
    assert "/home/alice" not in text and "…/my-chat-model" in text and "…/1" in text
    assert not re.search(r"\{'|\[\('|': |None\b|True\b|False\b", text)


def test_the_same_inputs_render_the_same_page(page):
    assert render_report(inputs()) == page


def test_a_bare_summary_renders_with_empty_cards_and_generations():
    s = summary()
    del s["explain"]
    out = render_report(s)
    assert "Skipped: not in this output." in out and 'id="generations"' in out


def test_paths_are_shortened_wherever_they_are():
    got = scrub_paths({"a": ["/tmp/x/y.txt", "~/m", "C:\\u\\m", "gpt2", "a/b"], "b": 1})
    assert got == {"a": ["…/y.txt", "…/m", "…/m", "gpt2", "a/b"], "b": 1}


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed")
def test_the_page_passes_the_browser_check(page, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    result = check_page(path, screenshot=tmp_path / "shot.png")
    assert result.ok, result.errors
    assert result.height > 2000 and result.screenshot.is_file()
