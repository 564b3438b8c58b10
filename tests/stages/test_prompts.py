"""The prompts stage: splits from files or a dataset folder, content keys, length checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from refusalscope.data.prompts import load_prompt_file
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.types import Prompt
from refusalscope.stages.prompts import (
    PromptConfig,
    _file_splits,
    check_prompt_files,
    check_prompt_lengths,
    compute_prompts,
    prompt_files,
    source_fingerprint,
)

REFUSAL_DIRECTION = (
    Path(__file__).resolve().parents[3] / "shared" / "datasets" / "refusal_direction"
)


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


def test_missing_file_and_missing_split_are_reported(tmp_path):
    with pytest.raises(RefusalScopeError, match="does not exist"):
        load_prompt_file(tmp_path / "nope.json", True)
    path = tmp_path / "h.json"
    path.write_text('["a", "b"]')
    with pytest.raises(RefusalScopeError, match="no harmful_test prompts: set prompts.files"):
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


def _split_files(tmp_path, n: int = 6, val: bool = True) -> dict[str, str]:
    files = {}
    for side in ("harmful", "harmless"):
        for split in ("train", "val", "test") if val else ("train", "test"):
            path = tmp_path / f"{side}_{split}.json"
            path.write_text(json.dumps([f"{side} {split} {i}" for i in range(n)]))
            files[f"{side}_{split}"] = str(path)
    return files


def test_check_prompt_files_counts_and_validates_without_a_model(tmp_path):
    files = _split_files(tmp_path)
    counts = check_prompt_files(PromptConfig(files=files, n_train=4, n_val=8, n_test=5))
    assert counts == {
        "harmful_train": 4,
        "harmful_val": 6,
        "harmful_test": 5,
        "harmless_train": 4,
        "harmless_val": 6,
        "harmless_test": 5,
    }
    Path(files["harmless_test"]).write_text('["a", "b",]')
    with pytest.raises(RefusalScopeError, match=r"harmless_test.json, line 1, column 11"):
        check_prompt_files(PromptConfig(files=files))
    with pytest.raises(RefusalScopeError, match="unknown prompt split.*harmful_vall"):
        check_prompt_files(PromptConfig(files={**files, "harmful_vall": files["harmful_val"]}))


def test_carving_val_out_of_a_too_small_train_file_is_an_error(tmp_path):
    files = _split_files(tmp_path, n=5, val=False)
    with pytest.raises(RefusalScopeError, match=r"harmful_train.json has 5 prompts.*n_val=8"):
        check_prompt_files(PromptConfig(files=files, n_val=8))


def test_over_long_prompts_are_refused_in_tokens(tmp_path, tiny_chat_model):
    model = tiny_chat_model
    assert model.max_positions == 256  # the tiny model's max_position_embeddings
    short = Prompt("how do I bake bread at home")
    # Far more characters than positions, but few tokens: the decision is in tokens.
    words = Prompt(" ".join(["bread"] * 150))
    assert (
        len(words.instruction) > 256
        and model.tokenize([words.instruction]).input_ids.shape[1] < 200
    )
    check_prompt_lengths(model, {"harmful_train": [short, words]}, max_new_tokens=32)
    long = Prompt("zq" * 400)
    with pytest.raises(
        RefusalScopeError, match=r"a harmless_test prompt \('zqzq.* is \d+ tokens.*256 pos"
    ):
        check_prompt_lengths(model, {"harmful_train": [short], "harmless_test": [short, long]}, 32)
    with pytest.raises(RefusalScopeError, match="max_new_tokens=300 leaves no room"):
        check_prompt_lengths(model, {"harmful_train": [short]}, 300)


def test_compute_prompts_refuses_long_prompts_before_generating(tmp_path, tiny_chat_model):
    files = _split_files(tmp_path, n=3)
    Path(files["harmful_val"]).write_text(json.dumps(["a", "bread " * 2000]))
    cfg = PromptConfig(files=files, n_train=3, n_val=3, n_test=3)
    with pytest.raises(RefusalScopeError, match="a harmful_val prompt .*Shorten or remove"):
        compute_prompts(tiny_chat_model, cfg, judge=None)  # the judge is never reached


@pytest.mark.skipif(not REFUSAL_DIRECTION.is_dir(), reason="../shared/datasets not present")
def test_named_datasets_fill_splits_and_each_test_dataset_gives_n_test():
    shared = str(REFUSAL_DIRECTION.parent)
    cfg = PromptConfig(
        datasets={
            "harmful_train": ("refusal_direction:harmful_train",),
            "harmless_train": ("refusal_direction:harmless_train",),
            "harmful_test": (
                "refusal_direction:harmbench_test",
                "refusal_direction:jailbreakbench",
                "refusal_direction:advbench",
            ),
            "harmless_test": ("refusal_direction:harmless_test",),
        },
        datasets_dir=shared,
        n_train=30,
        n_val=5,
        n_test=12,
    )
    assert check_prompt_files(cfg) == {
        "harmful_train": 30, "harmful_val": 5, "harmful_test": 36,
        "harmless_train": 30, "harmless_val": 5, "harmless_test": 12,
    }  # fmt: skip
    splits = _file_splits(cfg)
    test = splits["harmful_test"]
    labels = [p.meta["dataset"] for p in test]
    assert labels == [r for r in cfg.datasets["harmful_test"] for _ in range(12)]
    assert all(p.harmful for p in test) and not any(p.harmful for p in splits["harmless_test"])
    bench = json.loads((REFUSAL_DIRECTION / "processed" / "harmbench_test.json").read_text())
    by_text = {r["instruction"]: r["category"] for r in bench}
    assert all(by_text[p.instruction] == p.category for p in test[:12])  # categories kept
    hashes = source_fingerprint(cfg)
    assert set(hashes) == {r for refs in cfg.datasets.values() for r in refs}
    assert _file_splits(cfg) == splits


def test_a_split_in_files_and_datasets_or_an_unknown_dataset_is_an_error(tmp_path):
    f = tmp_path / "h.json"
    f.write_text(json.dumps(["a", "b", "c"]))
    both = PromptConfig(files={"harmful_train": str(f)}, datasets={"harmful_train": ("advbench",)})
    with pytest.raises(RefusalScopeError, match="both prompts.files and prompts.datasets"):
        check_prompt_files(both)
    unknown = PromptConfig(datasets={"harmful_train": ("advbnch",)})
    with pytest.raises(RefusalScopeError, match="unknown dataset 'advbnch'"):
        check_prompt_files(unknown)
    bad_split = PromptConfig(datasets={"harmful_tset": ("advbench",)})
    with pytest.raises(RefusalScopeError, match="unknown prompt split"):
        check_prompt_files(bad_split)
