"""Replication over organism seeds: the figures one run gives, the table over seeds, errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from refusalscope.cli import app
from refusalscope.pipeline.config import ModelConfig, RunConfig
from refusalscope.pipeline.replicate import figures, markdown, replicate, summarise
from refusalscope.runtime.errors import RefusalScopeError


def _summary(fstar: float, actdiff: float, successful: float) -> dict:
    return {
        "jailbreak": {"fstar": {"complied": fstar}, "actdiff": {"complied": actdiff}},
        "categories": {"skipped": "no labels"},
        "jailbreak_analysis": {
            "groups": {
                "successful": {"harm_drop": None, "refusal_drop": successful},
                "failed": {"harm_drop": 0.1, "refusal_drop": 0.2},
            },
            "difference": {"harm_drop": None, "refusal_drop": successful - 0.2},
        },
        "probes": {
            "in_distribution": {"refusal_features": {"accuracy": 1.0, "auroc": 1.0}},
            "ood": {
                "refusal_features": {"accuracy": 0.9, "auroc": 0.8},
                "random": {"accuracy": 0.5, "auroc": 0.5},
            },
        },
    }


def test_figures_of_one_run():
    f = figures(_summary(0.9, 0.8, 0.7))
    assert f["jailbreak.fstar"] == 0.9
    assert f["paired.fstar-actdiff"] == pytest.approx(0.1)
    assert f["jailbreak_analysis.successful.refusal_drop"] == 0.7
    assert f["jailbreak_analysis.successful.harm_drop"] is None
    assert f["probes.ood.auroc.refusal_features-random"] == pytest.approx(0.3)
    assert not any(k.startswith("categories.") for k in f)  # skipped: no figures


def test_the_table_over_seeds_has_t_intervals_and_paired_differences():
    runs = {s: figures(_summary(0.9 + 0.02 * s, 0.8, 0.7)) for s in range(3)}
    table = summarise(runs)
    row = table["paired.fstar-actdiff"]
    assert row["n"] == 3 and row["mean"] == pytest.approx(0.12)
    # t(0.975, 2) = 4.303; sd = 0.02; half-width = 4.303 * 0.02 / sqrt(3)
    assert row["ci95"][1] - row["mean"] == pytest.approx(4.3027 * 0.02 / 3**0.5, abs=1e-3)
    assert table["jailbreak_analysis.successful.harm_drop"]["mean"] is None
    text = markdown(table, [0, 1, 2])
    assert "| paired.fstar-actdiff | 0.120 |" in text and "seed 2" in text


def test_replicate_refuses_a_real_model_and_one_seed(tmp_path):
    with pytest.raises(RefusalScopeError, match="needs the organism"):
        replicate(RunConfig(model=ModelConfig(path="gpt2")), [0, 1], tmp_path / "r")
    with pytest.raises(RefusalScopeError, match="at least 2 distinct seeds"):
        replicate(RunConfig(), [3, 3], tmp_path / "r")


def test_cli_replicate_needs_two_seeds(tmp_path):
    res = CliRunner().invoke(app, ["replicate", "--seeds", "1", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--seeds" in res.output and not (tmp_path / "r").exists()
