"""The whole run config is checked before any model, organism or SAE is loaded."""

from __future__ import annotations

import json

import pytest

from refusalscope.pipeline import context
from refusalscope.pipeline.config import RunConfig
from refusalscope.pipeline.context import load_context
from refusalscope.runtime.config import from_dict
from refusalscope.runtime.errors import RefusalScopeError


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if anything heavy is loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("loaded a model/organism/SAE before the config was checked")

    monkeypatch.setattr(context, "build_organism", refuse)
    monkeypatch.setattr(context.ChatModel, "load", refuse)
    monkeypatch.setattr(context.SAESet, "from_folders", refuse)
    monkeypatch.setattr(context.SAESet, "from_release", refuse)


def _prompt_dir(tmp_path):
    splits = tmp_path / "data" / "splits"
    splits.mkdir(parents=True)
    for side in ("harmful", "harmless"):
        for split in ("train", "val", "test"):
            rows = [{"instruction": f"{side} {split} {i}"} for i in range(3)]
            (splits / f"{side}_{split}.json").write_text(json.dumps(rows))
    return str(tmp_path / "data")


@pytest.mark.parametrize(
    ("raw", "force", "phrase"),
    [
        ({"judge": "harmbench-typo"}, None, "unknown judge 'harmbench-typo'; choose one of"),
        ({}, "atribution", "--force takes one of"),
        (
            {"model": {"dtype": "float33"}},
            None,
            "model.dtype must be one of .*the string 'float33'",
        ),
        ({"saes": {"dtype": "int8"}}, None, "saes.dtype must be one of .*got the string 'int8'"),
        ({"saes": {"folders": {"3": "/nowhere/sae"}}}, None, "layer 3 .*has no cfg.json"),
        ({"model": {"path": "org/model"}}, None, "a real model needs prompts"),
        ({"prompts": {"dataset_dir": "/nowhere"}}, None, "dataset_dir /nowhere is not a folder"),
        ({"evaluation": {"text_file": "/nowhere/t.txt"}}, None, "text file /nowhere/t.txt does"),
        (
            {"prompts": {"files": {"harmful_train": "/nowhere/a.json"}}},
            None,
            "no harmful_test prompts",
        ),
        (
            {"analysis": {"jailbreak_pairs": "/nowhere/wildjailbreak.tsv"}},
            None,
            "jailbreak pair file /nowhere/wildjailbreak.tsv does not exist",
        ),
        ({}, "probe", "--force takes one of .*categories, jailbreak_analysis, probes"),
        ({"analysis": {"probe_k": 0}}, None, "analysis.probe_k must be positive"),
    ],
)
def test_bad_config_fails_before_loading(no_loading, raw, force, phrase):
    with pytest.raises(RefusalScopeError, match=phrase):
        load_context(from_dict(RunConfig, raw, "run config"), force)


def test_missing_prompt_file_and_missing_saes_fail_before_loading(no_loading, tmp_path):
    data = _prompt_dir(tmp_path)
    cfg = from_dict(RunConfig, {"model": {"path": "org/model"}, "prompts": {"dataset_dir": data}})
    with pytest.raises(RefusalScopeError, match="no SAEs configured"):
        load_context(cfg)
    files = {"harmful_train": f"{data}/splits/harmful_train.json", "harmful_test": "/no/x.json"}
    files |= {"harmless_train": files["harmful_train"], "harmless_test": files["harmful_train"]}
    cfg = from_dict(RunConfig, {"prompts": {"files": files}})
    with pytest.raises(RefusalScopeError, match=r"harmful_test \(/no/x.json\) does not exist"):
        load_context(cfg)


def test_a_good_config_gets_to_loading(no_loading, tmp_path):
    """The checks pass a valid config through: the first heavy step is then reached."""
    cfg = from_dict(
        RunConfig, {"judge": "substring", "prompts": {"dataset_dir": _prompt_dir(tmp_path)}}
    )
    with pytest.raises(AssertionError, match="before the config was checked"):
        load_context(cfg)
