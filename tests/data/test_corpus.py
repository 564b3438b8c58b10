"""Plain text streamed from a dataset in the layout `datasets` reads (a local folder here;
a hub id the same way), with clear errors for a wrong column or name."""

from __future__ import annotations

import json

import pytest

from refusalscope.data.corpus import stream_texts
from refusalscope.runtime.errors import RefusalScopeError


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = [{"text": "first passage"}, {"text": " "}, {"text": "second"}, {"text": "third"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_the_first_n_non_empty_rows_are_streamed(folder):
    assert stream_texts(str(folder), None, "train", "text", 2) == ["first passage", "second"]
    assert stream_texts(str(folder), None, "train", "text", 10)[-1] == "third"


def test_a_wrong_column_or_name_is_one_clear_error(folder, tmp_path):
    with pytest.raises(RefusalScopeError, match="no column 'body' .*columns: text"):
        stream_texts(str(folder), None, "train", "body", 2)
    with pytest.raises(RefusalScopeError, match="could not stream .*explain.corpus_dataset = null"):
        stream_texts(str(tmp_path / "missing"), None, "train", "text", 2)
