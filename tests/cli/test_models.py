"""The real-model commands: presets, datasets, run --preset --dry-run, export."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from refusalscope.cli import app
from refusalscope.pipeline.dry_run import preset_config
from refusalscope.pipeline.presets import preset_names

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
runner = CliRunner()


def test_presets_lists_every_preset_and_describes_one():
    out = runner.invoke(app, ["presets"])
    assert out.exit_code == 0
    assert all(name in out.output for name in preset_names())
    one = runner.invoke(app, ["presets", "llama-3.1-8b-instruct"])
    assert one.exit_code == 0 and "l1r_8x" in one.output and "32 layers" in one.output
    bad = runner.invoke(app, ["presets", "gemma-7"])
    assert bad.exit_code == 2 and "gemma-2-2b-it" in bad.output


def test_every_preset_becomes_a_checked_run_config():
    from refusalscope.pipeline.config import RunConfig
    from refusalscope.runtime.config import from_dict

    for name in preset_names():
        cfg = from_dict(RunConfig, preset_config(name), name)
        assert cfg.model.path and cfg.saes.release and cfg.judges == ("harmbench",)
        assert cfg.prompts.datasets["harmful_test"] == (
            "harmbench:test",
            "jailbreakbench",
            "advbench",
        )
        assert cfg.saes.dtype == cfg.model.dtype == "bfloat16"


def test_dry_run_resolves_model_saes_datasets_and_judges_without_loading(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["run", "--preset", "gemma-2-2b-it-65k", "--dry-run"]
    out = runner.invoke(app, [*args, "--set", f"prompts.datasets_dir={SHARED}"])
    text = out.output
    for part in ("2.61 B parameters, 5.23 GB in bfloat16", "layer_25/width_65k/canonical",
                 "31.42 GB in float32", "harmbench (cais/HarmBench-Llama-2-13b-cls, 26.03 GB",
                 "benchmarks (lm-eval): gsm8k, arc_challenge", "download: https://"):  # fmt: skip
        assert part in text, part
    # offline, a dataset that is nowhere on disk gives one clear error and exit 2: HarmBench's
    # CSV (refusal_direction's files too when ../shared/datasets is not beside the checkout)
    missing = "harmbench" if SHARED.is_dir() else "refusal_direction"
    assert out.exit_code == 2 and f"not ready: dataset '{missing}'" in text
    assert f"in DIR/{missing}/ and pass --dir DIR" in text
    if SHARED.is_dir():
        assert "refusal_direction:harmful_train -> harmful_train (on disk:" in text
    assert "Traceback" not in text


def test_dry_run_of_the_organism_is_ready():
    out = runner.invoke(app, ["run", "--dry-run", "--set", 'judges=["substring"]'])
    assert out.exit_code == 0, out.output
    assert "model organism" in out.output and "ready:" in out.output
    assert "judge on every generation: substring" in out.output


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets not present")
def test_datasets_lists_and_counts():
    out = runner.invoke(app, ["datasets"])
    assert out.exit_code == 0 and "harmbench" in out.output and "wildjailbreak" in out.output
    one = runner.invoke(app, ["datasets", "refusal_direction", "--dir", str(SHARED)])
    assert one.exit_code == 0
    assert "harmful_train: 260" in one.output and "jailbreakbench: 100" in one.output
    assert "content warning" in one.output
    bad = runner.invoke(app, ["datasets", "advbnch"])
    assert bad.exit_code == 2 and "unknown dataset 'advbnch'" in bad.output


def test_export_names_a_folder_that_is_not_a_run(tmp_path):
    out = runner.invoke(app, ["export", "abliterated", "--run", str(tmp_path), "--out",
                              str(tmp_path / "x")])  # fmt: skip
    assert out.exit_code == 2 and "not a refusalscope run output" in out.output
