"""No test of the data package reaches the network."""

from __future__ import annotations

import urllib.request

import huggingface_hub
import pytest


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Caches in tmp_path; both download functions record their call and fail."""
    monkeypatch.setenv("REFUSALSCOPE_CACHE", str(tmp_path / "rs-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    calls = []

    def refuse(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    return calls
