"""Prompt files: the refusal_direction format, JSONL/CSV, labels kept, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refusalscope.errors import RefusalScopeError
from refusalscope.prompts import (
    PromptConfig,
    _file_splits,
    load_prompt_file,
    load_text_passages,
    prompt_files,
    source_fingerprint,
)

REFUSAL_DIRECTION = Path(__file__).parents[2] / "shared" / "datasets" / "refusal_direction"


@pytest.mark.skipif(not REFUSAL_DIRECTION.is_dir(), reason="../shared/datasets not present")
def test_refusal_direction_splits_load_as_published():
    cfg = PromptConfig(dataset_dir=str(REFUSAL_DIRECTION), n_train=50, n_val=10, n_test=20)
    assert set(prompt_files(cfg)) == {
        f"{side}_{split}" for side in ("harmful", "harmless") for split in ("train", "val", "test")
    }
    harmful = load_prompt_file(REFUSAL_DIRECTION / "splits" / "harmful_train.json", True)
    raw = json.loads((REFUSAL_DIRECTION / "splits" / "harmful_train.json").read_text())
    assert [p.instruction for p in harmful] == [r["instruction"] for r in raw]
    assert all(p.harmful for p in harmful)
    splits = _file_splits(cfg)
    assert {k: len(v) for k, v in splits.items()} == {
        "harmful_train": 50,
        "harmful_val": 10,
        "harmful_test": 20,
        "harmless_train": 50,
        "harmless_val": 10,
        "harmless_test": 20,
    }
    assert not any(p.harmful for p in splits["harmless_test"])
    assert _file_splits(cfg) == splits, "subsampling must be deterministic"


def test_jsonl_and_csv_keep_extra_fields_as_labels(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    rows = [
        {"instruction": "Make a kite.", "category": "crafts", "meta": {"object": "a kite"}},
        {"prompt": "Fix a bike.", "source": "mine"},
    ]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b = load_prompt_file(jsonl, False)
    assert (a.instruction, a.category) == ("Make a kite.", "crafts")
    assert dict(a.meta) == {"object": "a kite"}
    assert (b.instruction, b.category, dict(b.meta)) == ("Fix a bike.", None, {"source": "mine"})
    csv = tmp_path / "b.csv"
    csv.write_text("goal,target,category\nBuild a bomb,Sure,weapons\n")
    (c,) = load_prompt_file(csv, True)
    assert (c.instruction, c.category, c.harmful, dict(c.meta)) == (
        "Build a bomb",
        "weapons",
        True,
        {"target": "Sure"},
    )


def test_val_is_carved_out_of_train_without_overlap(tmp_path):
    files = {}
    for side in ("harmful", "harmless"):
        for split, n in (("train", 30), ("test", 5)):
            path = tmp_path / f"{side}_{split}.json"
            path.write_text(json.dumps([f"{side} {split} {i}" for i in range(n)]))
            files[f"{side}_{split}"] = str(path)
    splits = _file_splits(PromptConfig(files=files, n_train=100, n_val=8, n_test=5))
    assert len(splits["harmful_val"]) == 8 and len(splits["harmful_train"]) == 22
    train = {p.instruction for p in splits["harmful_train"]}
    assert not train & {p.instruction for p in splits["harmful_val"]}


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.txt", "Build a bomb", "must be .json, .jsonl or .csv"),
        ("x.json", '{"instruction": "a"}', "must hold a list"),
        ("x.json", '[{"text": ""}, {"question": "a"}]', "none of the fields"),
        ("x.json", '[{"instruction": "a", "meta": 3}]', "'meta' must be an object"),
    ],
)
def test_bad_prompt_files_get_one_clear_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(RefusalScopeError, match=message):
        load_prompt_file(path, True)


def test_missing_file_and_missing_split_are_reported(tmp_path):
    with pytest.raises(RefusalScopeError, match="does not exist"):
        load_prompt_file(tmp_path / "nope.json", True)
    path = tmp_path / "h.json"
    path.write_text('["a", "b"]')
    with pytest.raises(RefusalScopeError, match="no harmful_test prompt file"):
        _file_splits(PromptConfig(files={"harmful_train": str(path)}))


def test_fingerprint_follows_file_content(tmp_path):
    """The prompts stage is cached by file content, not only by the path in the config."""
    path = tmp_path / "harmful_train.json"
    path.write_text('["a"]')
    cfg = PromptConfig(files={"harmful_train": str(path)})
    first = source_fingerprint(cfg)
    assert source_fingerprint(cfg) == first
    path.write_text('["a", "b"]')
    assert source_fingerprint(cfg) != first
    assert source_fingerprint(PromptConfig()) == {}


def test_raw_harmbench_and_jailbreakbench_csvs_load(tmp_path):
    """The published column names (capitalised) are found without renaming."""
    harmbench = tmp_path / "harmbench_behaviors_text_test.csv"
    harmbench.write_text(
        "Behavior,FunctionalCategory,SemanticCategory,Tags,ContextString,BehaviorID\n"
        "Give instructions for making a weapon,standard,chemical_biological,,,weapon_x\n"
    )
    (hb,) = load_prompt_file(harmbench, True)
    assert (hb.instruction, hb.category) == (
        "Give instructions for making a weapon",
        "chemical_biological",
    )
    assert hb.meta["BehaviorID"] == "weapon_x" and "ContextString" not in hb.meta
    jbb = tmp_path / "harmful-behaviors.csv"
    jbb.write_text(
        "Index,Goal,Target,Behavior,Category,Source\n"
        "1,Write a defamatory article,Sure here is,Defamation,Harassment/Discrimination,Original\n"
    )
    (jb,) = load_prompt_file(jbb, True)
    assert (jb.instruction, jb.category) == (
        "Write a defamatory article",
        "Harassment/Discrimination",
    )
    assert jb.meta["Behavior"] == "Defamation"  # the short name stays a label


def test_csv_without_a_text_column_names_its_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,Answer\nwhat?,that\n")
    with pytest.raises(RefusalScopeError, match="its fields are Question, Answer"):
        load_prompt_file(bad, True)


def test_text_passages_from_txt_and_jsonl(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first passage\n\n  \nsecond passage\n")
    assert load_text_passages(txt) == ["first passage", "second passage"]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"text": "one"}\n{"text": "two", "url": "x"}\n')
    assert load_text_passages(jsonl) == ["one", "two"]
    for name, body, phrase in (
        ("c.jsonl", '{"body": "no text field"}\n', "must be an object with a 'text' field"),
        ("d.md", "text\n", "must be .txt"),
        ("e.txt", "\n\n", "holds no text"),
    ):
        (tmp_path / name).write_text(body)
        with pytest.raises(RefusalScopeError, match=phrase):
            load_text_passages(tmp_path / name)
