"""Configs from files with clear errors; artifacts complete atomically or not at all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from refusalscope.pipeline.run import RunConfig
from refusalscope.runtime import cache
from refusalscope.runtime.cache import (
    COMPLETE,
    atomic_folder,
    code_fingerprint,
    is_complete,
    module_closure,
)
from refusalscope.runtime.config import config_hash, from_dict, read_config_file, to_dict
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.files import load_tensors, read_json, save_tensors, write_json


def test_run_config_round_trips_through_dicts_and_files(tmp_path):
    raw = {
        "model": {"path": "google/gemma-2-2b-it", "dtype": "bfloat16"},
        "saes": {"release": "gemma-scope-2b-pt-res-canonical", "ids": {"12": "layer_12/x"}},
        "evaluation": {"k_star": 5, "sweep_c": [0.0, -1.0]},
    }
    cfg = from_dict(RunConfig, raw)
    assert cfg.saes.ids == {12: "layer_12/x"} and cfg.evaluation.sweep_c == (0.0, -1.0)
    assert from_dict(RunConfig, to_dict(cfg)) == cfg
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\npath = "m"\n[saes.folders]\n3 = "sae3"\n')
    cfg2 = from_dict(RunConfig, read_config_file(toml))
    assert cfg2.saes.folders == {3: "sae3"} and cfg2.model.path == "m"


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(RefusalScopeError, match="unknown key.*colour.*known keys"):
        from_dict(RunConfig, {"model": {"colour": "red"}})
    with pytest.raises(RefusalScopeError, match="k_star must be positive"):
        from_dict(RunConfig, {"evaluation": {"k_star": 0}})
    with pytest.raises(RefusalScopeError, match="integer keys"):
        from_dict(RunConfig, {"saes": {"folders": {"twelve": "x"}}})
    with pytest.raises(RefusalScopeError, match="does not exist"):
        read_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RefusalScopeError, match="not valid JSON"):
        read_config_file(bad)
    with pytest.raises(RefusalScopeError, match="not both"):
        from_dict(RunConfig, {"saes": {"folders": {"0": "a"}, "release": "r", "ids": {"0": "x"}}})


def test_config_hash_changes_with_any_field():
    a = RunConfig()
    b = from_dict(RunConfig, {"attribution": {"ig_steps": 9}})
    assert config_hash(a) == config_hash(RunConfig()) and config_hash(a) != config_hash(b)


def test_atomic_folder_is_complete_only_after_success(tmp_path):
    final = tmp_path / "stage" / "abc"
    with pytest.raises(RuntimeError), atomic_folder(final) as tmp:
        (tmp / "half.json").write_text("{}")
        raise RuntimeError("crash mid-stage")
    assert not final.exists() and not is_complete(final)
    assert list((tmp_path / "stage").iterdir()) == []  # no temp folder left behind
    with atomic_folder(final, {"stage": "x"}) as tmp:
        save_tensors(tmp / "t.safetensors", {"a": torch.arange(3)})
        write_json(tmp / "r.json", {"ok": True})
    assert is_complete(final)
    assert read_json(final / COMPLETE)["meta"] == {"stage": "x"}
    assert "torch" in read_json(final / COMPLETE)["versions"]
    assert torch.equal(load_tensors(final / "t.safetensors")["a"], torch.arange(3))
    assert not list(final.glob("*.pkl")) and json.loads((final / "r.json").read_text())["ok"]


def _package_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the package source that fingerprints are taken from (edits stay here)."""
    copy = tmp_path / "refusalscope"
    shutil.copytree(cache.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "PACKAGE_ROOT", copy)
    code_fingerprint.cache_clear()
    return copy


def _edit(path: Path) -> None:
    with path.open("a") as f:
        f.write("\n# an edit\n")
    code_fingerprint.cache_clear()


STAGE_MODULES = [
    "refusalscope.stages.prompts",
    "refusalscope.stages.direction",
    "refusalscope.stages.attribution",
    "refusalscope.stages.features",
    "refusalscope.evaluation.sweep",
    "refusalscope.evaluation.jailbreak",
]


def test_a_stage_key_covers_the_code_it_runs_and_nothing_else(tmp_path, monkeypatch):
    copy = _package_copy(tmp_path, monkeypatch)
    try:
        before = {m: code_fingerprint(m) for m in STAGE_MODULES}
        for outside in ("report/html.py", "cli.py", "pipeline/run.py", "pipeline/outputs.py"):
            _edit(copy / outside)
        assert {m: code_fingerprint(m) for m in STAGE_MODULES} == before
        _edit(copy / "stages" / "features.py")
        after = {m: code_fingerprint(m) for m in STAGE_MODULES}
        changed = {m.rsplit(".", 1)[1] for m in STAGE_MODULES if after[m] != before[m]}
        assert changed == {"features", "sweep", "jailbreak"}  # F* and what clamps it
        _edit(copy / "runtime" / "model.py")
        assert all(code_fingerprint(m) != after[m] for m in STAGE_MODULES)
    finally:
        code_fingerprint.cache_clear()


def test_module_closure_follows_imports_transitively():
    """Function-level imports count, ``if TYPE_CHECKING:`` ones do not (the facade's
    lazy names pull in nothing)."""
    files = {
        p.relative_to(cache.PACKAGE_ROOT).as_posix()
        for p in module_closure(["refusalscope.stages.attribution"])
    }
    assert {
        "__init__.py",
        "stages/__init__.py",
        "stages/attribution.py",
        "stages/candidates.py",
        "stages/direction.py",
        "runtime/model.py",
        "runtime/tokens.py",
    } <= files
    assert not [f for f in files if f.startswith(("report/", "pipeline/", "evaluation/", "cli"))]
    with pytest.raises(ModuleNotFoundError, match="no refusalscope module"):
        code_fingerprint("refusalscope.no_such_module")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"evaluation": {"k_star": "5"}},
            "evaluation.k_star must be an integer, got the string '5'",
        ),
        (
            {"evaluation": {"max_new_tokens": "32"}},
            "evaluation.max_new_tokens must be an integer, got the string '32'",
        ),
        (
            {"prompts": {"n_train": True}},
            "prompts.n_train must be an integer, got the boolean true",
        ),
        (
            {"evaluation": {"k_star": 5.0}},
            "evaluation.k_star must be an integer, got the number 5.0",
        ),
        ({"evaluation": {"c": "-3"}}, "evaluation.c must be a number, got the string '-3'"),
        ({"evaluation": {"c": False}}, "evaluation.c must be a number, got the boolean false"),
        ({"prompts": {"filter": "no"}}, "prompts.filter must be true or false, got the string"),
        ({"model": {"path": 7}}, "model.path must be a string, got the integer 7"),
        ({"evaluation": {"sweep_k": [10, "20"]}}, r"evaluation.sweep_k\[1\] must be an integer"),
        ({"evaluation": {"sweep_c": -1}}, "evaluation.sweep_c must be a list, got the integer -1"),
        ({"saes": {"folders": {"3": 3}}}, "saes.folders.3 must be a string, got the integer 3"),
        (
            {"attribution": {"mixing": "both"}},
            "attribution.mixing must be one of 'joint', 'per_layer'",
        ),
        ({"prompts": {"files": ["a.json"]}}, "prompts.files must be a table/object, got the list"),
        ({"organism": {"sae": {"k": "20"}}}, "organism.sae.k must be an integer"),
    ],
)
def test_config_values_of_the_wrong_type_name_field_and_value(raw, message):
    with pytest.raises(RefusalScopeError, match=rf"run config\.{message}"):
        from_dict(RunConfig, raw, "run config")


def test_config_ints_serve_as_floats_and_null_as_none():
    cfg = from_dict(
        RunConfig,
        {"evaluation": {"c": -2, "sweep_c": [0, -1], "induction_values": None, "k_star": 7}},
    )
    assert cfg.evaluation.c == -2.0 and isinstance(cfg.evaluation.c, float)
    assert cfg.evaluation.sweep_c == (0.0, -1.0) and cfg.evaluation.k_star == 7
    assert cfg.evaluation.induction_values is None


def test_non_utf8_config_file_names_the_line(tmp_path):
    bad = tmp_path / "run.toml"
    bad.write_bytes(b'[model]\npath = "caf\xe9"\n')
    with pytest.raises(RefusalScopeError, match=r"run.toml, line 2: byte 0xe9 is not UTF-8"):
        read_config_file(bad)
