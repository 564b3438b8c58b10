"""The command line: `--set` overrides one config field at a time, checked like a file's."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from refusalscope.cli import app
from refusalscope.runtime.config import apply_overrides
from refusalscope.runtime.errors import RefusalScopeError


def test_apply_overrides_reads_json_values_and_keeps_text():
    base = {"evaluation": {"c": -3.0}, "model": {"dtype": "float32"}}
    out = apply_overrides(
        base,
        [
            "evaluation.k_star=20",
            "evaluation.sweep_k=[10, 20]",
            "model.dtype=bfloat16",
            "judge=substring",
            "model.path=null",
        ],
    )
    assert out == {
        "evaluation": {"c": -3.0, "k_star": 20, "sweep_k": [10, 20]},
        "model": {"dtype": "bfloat16", "path": None},
        "judge": "substring",
    }
    assert base == {"evaluation": {"c": -3.0}, "model": {"dtype": "float32"}}  # not mutated


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("evaluation.k_star", "takes section.field=value"),
        ("=3", "takes section.field=value"),
        ("judge.name=x", "judge is a value, not a section"),
    ],
)
def test_bad_overrides_say_what_to_write(item, message):
    with pytest.raises(RefusalScopeError, match=message):
        apply_overrides({"judge": "substring"}, [item])


def test_run_applies_set_over_the_config_file(tmp_path, monkeypatch):
    from refusalscope.pipeline import run as pipeline_run

    seen = []

    def fake_run(cfg, force=None, on_stage=None):
        seen.append(cfg)
        raise RefusalScopeError("stopped before any work")

    monkeypatch.setattr(pipeline_run, "run", fake_run)
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"evaluation": {"k_star": 5, "use_sweep": False}}))
    args = ["run", "--config", str(config), "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(
        app, [*args, "--set", "evaluation.k_star=20", "--set", "evaluation.c=-2"]
    )
    assert res.exit_code == 2 and "stopped before any work" in res.output
    (cfg,) = seen
    assert (cfg.evaluation.k_star, cfg.evaluation.c, cfg.evaluation.use_sweep) == (20, -2.0, False)


def test_a_bad_set_value_is_one_clear_error(tmp_path):
    out = ["--out", str(tmp_path / "out")]
    res = CliRunner().invoke(app, ["run", *out, "--set", "evaluation.k_star=zero"])
    assert res.exit_code == 2
    assert "evaluation.k_star must be an integer, got the string 'zero'" in res.output
    res = CliRunner().invoke(app, ["run", *out, "--set", "evaluation.colour=red"])
    assert res.exit_code == 2 and "unknown key(s) colour in run config.evaluation" in res.output


def test_report_of_a_folder_that_is_not_a_run_is_one_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2
    assert "is not a refusalscope run output" in res.output and "Traceback" not in res.output
