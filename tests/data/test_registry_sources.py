"""Named datasets: the offline error, downloads through faked network calls (the autouse
``no_network`` fixture records and refuses real ones), content hashes, references."""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request

import huggingface_hub
import pytest

from refusalscope.data.registry import (
    DATASETS,
    content_hash,
    dataset_names,
    get_spec,
    load_prompts,
    parse_ref,
)
from refusalscope.data.sources import Source
from refusalscope.runtime.errors import RefusalScopeError
from tests.data.test_registry import (
    JBB_HEADER,
    harmbench_csv,
    write_csv,
)


# ------------------------------------------------------------------ offline and downloads
def test_offline_hub_request_is_one_clear_error(monkeypatch, no_network, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RefusalScopeError) as info:
        load_prompts("jailbreakbench", "harmful")
    msg = str(info.value)
    assert "'jailbreakbench'" in msg and "data/harmful-behaviors.csv" in msg
    assert "Hugging Face hub cache, JailbreakBench/JBB-Behaviors" in msg and "offline" in msg
    assert "put harmful-behaviors.csv in DIR/jailbreakbench/ and pass --dir DIR" in msg
    assert "\n" not in msg and info.value.__cause__ is None and info.value.__suppress_context__
    empty = tmp_path / "empty"
    empty.mkdir()
    looked = "looked for jailbreakbench/data/harmful-behaviors.csv, jailbreakbench/harmful-behav"
    with pytest.raises(RefusalScopeError, match=rf"the folder {empty} \({looked}"):
        load_prompts("jailbreakbench", "harmful", local_dir=empty)
    assert no_network == []


def test_connection_error_names_the_reason(monkeypatch):
    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(RefusalScopeError) as info:
        load_prompts("harmbench", "val")
    msg = str(info.value)
    assert "URLError" in msg and "Name or service not known" in msg
    assert "put harmbench_behaviors_text_val.csv in DIR/harmbench/ and pass --dir DIR" in msg


def test_github_download_is_pinned_and_cached(monkeypatch, tmp_path):
    source = tmp_path / "upstream.csv"
    harmbench_csv(source)
    urls = []

    class Response:
        def __init__(self, url):
            urls.append(url)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return source.read_bytes()

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(url))
    first = load_prompts("harmbench", "test")
    spec = get_spec("harmbench")
    assert urls == [
        "https://raw.githubusercontent.com/centerforaisafety/HarmBench/"
        "8e1604d1171fe8a48d8febecd22f600e462bdcdd/data/behavior_datasets/harmbench_behaviors_text_test.csv"
    ]
    cached = (
        tmp_path / "rs-cache/datasets/harmbench" / spec.source.revision / spec.splits["test"].path
    )
    assert cached.read_bytes() == source.read_bytes()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # now served from the cache
    assert load_prompts("harmbench", "test") == first and len(urls) == 1
    # AdvBench downloads refusal_direction's pinned copy but caches it under its published path.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    source.write_text("goal,target\nPlaceholder goal,Sure\n")
    assert [p.instruction for p in load_prompts("advbench")] == ["Placeholder goal"]
    assert urls[-1].endswith("/9d852fae1a9121c78b29142de733cb1340770cc3/dataset/raw/advbench.csv")


def test_hub_download_and_hub_cache(monkeypatch, tmp_path):
    rev = get_spec("jailbreakbench").source.revision
    calls = []

    def fake_download(repo, filename, *, repo_type, revision, cache_dir):
        calls.append((repo, filename, repo_type, revision, cache_dir))
        row = ["0", "Placeholder goal", "Sure", "B", "Privacy", "Original"]
        return str(write_csv(tmp_path / "dl" / filename, JBB_HEADER, [row]))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    (p,) = load_prompts("jailbreakbench")
    assert p.category == "Privacy"
    assert calls == [("JailbreakBench/JBB-Behaviors", "data/harmful-behaviors.csv", "dataset", rev,
                      str(tmp_path / "hub-cache"))]  # fmt: skip
    # A file already in the hub cache at the pinned commit is used offline.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = tmp_path / "hub-cache/datasets--JailbreakBench--JBB-Behaviors/snapshots" / rev
    write_csv(snapshot / "data/benign-behaviors.csv", JBB_HEADER,
              [["0", "Placeholder cached goal", "Sure", "B", "Privacy", "Original"]])  # fmt: skip
    (b,) = load_prompts("jailbreakbench", "benign")
    assert (b.instruction, b.harmful) == ("Placeholder cached goal", False) and len(calls) == 1


# ------------------------------------------------------------------ hashes and references
def test_content_hash_is_the_file_and_changes_with_it(tmp_path):
    path = harmbench_csv(tmp_path / "a/harmbench/harmbench_behaviors_text_test.csv")
    h = content_hash("harmbench", "test", tmp_path / "a")
    rel = "data/behavior_datasets/harmbench_behaviors_text_test.csv"
    file_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert h == hashlib.sha256(f"{rel}\0{file_sha}\n".encode()).hexdigest()
    assert content_hash("harmbench:test", local_dir=tmp_path / "a") == h
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # the same bytes elsewhere
    assert content_hash("harmbench", "test", tmp_path / "b") == h
    path.write_bytes(path.read_bytes().replace(b"Placeholder standard", b"Placeholder changed"))
    assert content_hash("harmbench", "test", tmp_path / "a") != h


def test_references_and_unknown_names():
    assert parse_ref("harmbench:test") == ("harmbench", "test")
    assert parse_ref(" catqa ") == ("catqa", None)
    with pytest.raises(
        RefusalScopeError, match="unknown dataset 'nope'; known datasets: advbench, alpaca"
    ):
        parse_ref("nope:test")
    with pytest.raises(
        RefusalScopeError, match="no split 'dev'; its splits: test, val, test_all, val_all"
    ):
        parse_ref("harmbench:dev")
    with pytest.raises(RefusalScopeError, match="no split 'x'"):
        load_prompts("catqa", "x")
    with pytest.raises(RefusalScopeError, match="full commit hash"):
        Source("hf", "owner/name", "main")


def test_registry_is_pinned_and_complete():
    assert dataset_names() == sorted(
        ["advbench", "alpaca", "catqa", "harmbench", "jailbreakbench", "refusal_direction",
         "strongreject", "tdc2023", "wikitext", "wildjailbreak"]
    )  # fmt: skip
    for spec in DATASETS.values():
        assert len(spec.source.revision) == 40 and spec.licence and spec.what
        assert spec.default_split in spec.splits
        assert all(not s.path.startswith("/") and ".." not in s.path for s in spec.splits.values())
    assert [n for n, s in DATASETS.items() if s.kind == "text"] == ["wikitext"]
