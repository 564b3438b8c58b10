"""Nothing the user owns is deleted, caches are keyed by content, output sets are whole,
and concurrent writers of one cache key both succeed (issue 8)."""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from refusalscope.cli import app
from refusalscope.runtime import cache, files
from refusalscope.runtime.cache import atomic_folder, folder_fingerprint, is_complete, key_lock
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.files import (
    MARKER,
    check_output_folder,
    clean_stale,
    output_folder,
    read_json,
    temp_path,
    write_json,
    write_jsonl,
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))


def _dead_pid() -> int:
    proc = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
    proc.start()
    proc.join()
    return proc.pid


# ------------------------------------------------------------ cache folders
def _write_key(final: str, barrier, tag: str) -> None:
    barrier.wait()
    with atomic_folder(Path(final)) as tmp:
        write_json(tmp / "result.json", {"writer": tag})
        (tmp / "big.bin").write_bytes(os.urandom(1 << 16))


def _watch(final: str, stop, bad) -> None:
    while not stop.is_set():
        if is_complete(Path(final)) and not (Path(final) / "result.json").is_file():
            bad.set()


def test_concurrent_writers_of_one_key_both_finish_with_one_complete_folder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for round_ in range(40):
        final = tmp_path / f"key{round_}"
        barrier, stop, bad = ctx.Barrier(3), ctx.Event(), ctx.Event()
        writers = [ctx.Process(target=_write_key, args=(str(final), barrier, t)) for t in "ab"]
        reader = ctx.Process(target=_watch, args=(str(final), stop, bad))
        for p in [reader, *writers]:
            p.start()
        barrier.wait()
        for p in writers:
            p.join(30)
        stop.set()
        reader.join(30)
        assert [p.exitcode for p in writers] == [0, 0], f"a writer crashed in round {round_}"
        assert not bad.is_set(), "a reader saw the folder complete before result.json"
        assert is_complete(final) and read_json(final / "result.json")["writer"] in "ab"
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".key{round_}.")]


def _compute_once(final: str, log: str, barrier) -> None:
    barrier.wait()
    with key_lock(Path(final)):
        if not is_complete(Path(final)):
            with open(log, "a") as f:
                f.write("computed\n")
            with atomic_folder(Path(final)) as tmp:
                write_json(tmp / "result.json", {"ok": True})


def test_the_key_lock_makes_two_runs_compute_a_stage_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    log = tmp_path / "log.txt"
    procs = [
        ctx.Process(target=_compute_once, args=(str(tmp_path / "k"), str(log), barrier))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text() == "computed\n"


def test_replace_swaps_a_complete_folder_and_otherwise_the_first_writer_wins(tmp_path):
    final = tmp_path / "k"
    for tag, replace in (("first", False), ("second", False), ("forced", True)):
        with atomic_folder(final, replace=replace) as tmp:
            write_json(tmp / "r.json", tag)
        assert read_json(final / "r.json") == ("forced" if replace else "first")
    assert [p.name for p in tmp_path.iterdir()] == ["k"]


def test_stale_temps_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead = _dead_pid()
    mine = temp_path(tmp_path / "x")
    stale = Path(str(mine).replace(f"-{os.getpid()}-", f"-{dead}-"))
    stale.mkdir()
    (stale / "half.safetensors").write_bytes(b"x")
    legacy = tmp_path / f".generations.jsonl.tmp-{dead}"
    legacy.write_text("{}")
    live = tmp_path / f".x.tmp-{os.uname().nodename}-1-5"  # pid 1 is alive
    live.mkdir()
    user = tmp_path / "notes.tmp-123"
    user.write_text("mine")
    assert sorted(clean_stale(tmp_path)) == sorted([stale, legacy])
    assert live.exists() and user.exists()


# ------------------------------------------------------------ strict JSON
def test_nan_is_refused_by_name_not_written(tmp_path):
    with pytest.raises(RefusalScopeError, match=r"jailbreak\.fstar\.complied is NaN"):
        write_json(tmp_path / "r.json", {"jailbreak": {"fstar": {"complied": float("nan")}}})
    with pytest.raises(RefusalScopeError, match=r"row 1 has a NaN or infinite score"):
        write_jsonl(tmp_path / "g.jsonl", [{"score": 1.0}, {"score": float("inf")}])
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ output folders
def _write_set(out: Path, tag: str, last=("results.json",)) -> None:
    with output_folder(out, "run", last=last) as tmp:
        (tmp / "attribution.safetensors").write_text(tag)
        write_json(tmp / "results.json", {"tag": tag})


def test_an_output_set_replaces_our_previous_set_whole(tmp_path):
    out = tmp_path / "out"
    _write_set(out, "one")
    with output_folder(out, "run", last=("results.json",)) as tmp:
        (tmp / "extra.jsonl").write_text("x")
        write_json(tmp / "results.json", {"tag": "two"})
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "extra.jsonl", "results.json"]
    assert read_json(out / MARKER)["files"] == ["extra.jsonl", "results.json"]
    assert read_json(out / "results.json") == {"tag": "two"}


def test_a_full_disk_while_writing_leaves_the_previous_set_intact(tmp_path):
    out = tmp_path / "out"
    _write_set(out, "one")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    full = pytest.raises(RefusalScopeError, match="No space.*previous contents .* unchanged")
    with full, output_folder(out, "run") as tmp:
        (tmp / "attribution.safetensors").write_text("two")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_folder_holding_other_files_is_refused_and_left_alone(tmp_path):
    mine = tmp_path / "mywork"
    mine.mkdir()
    (mine / "thesis.tex").write_text("hi")
    with pytest.raises(RefusalScopeError, match="thesis.tex.*never deletes what it did not"):
        _write_set(mine, "one")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    # a file the user put into an earlier output set is not deleted either
    out = tmp_path / "out"
    _write_set(out, "one")
    (out / "my_notes.md").write_text("keep me")
    with pytest.raises(RefusalScopeError, match="also holds my_notes.md"):
        _write_set(out, "two")
    assert (out / "my_notes.md").read_text() == "keep me"
    assert read_json(out / "results.json") == {"tag": "one"}
    # another command's output is not overwritten
    with pytest.raises(RefusalScopeError, match="'run' output, not a 'organism'"):
        check_output_folder(out, "organism")


def test_bad_out_paths_are_refused_before_any_work(tmp_path, monkeypatch):
    a_file = tmp_path / "results.txt"
    a_file.write_text("x")
    with pytest.raises(RefusalScopeError, match="is a file; give a folder"):
        check_output_folder(a_file, "run")
    with pytest.raises(RefusalScopeError, match="cannot write to"):
        check_output_folder(a_file / "sub", "run")
    usage = shutil.disk_usage(tmp_path)._replace(free=5 * 2**20)
    monkeypatch.setattr(files.shutil, "disk_usage", lambda path: usage)
    with pytest.raises(RefusalScopeError, match="only 5 MiB free .* needs about 16 MiB"):
        check_output_folder(tmp_path / "new", "run", 16 * 2**20)
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------ organism --out
@pytest.fixture
def cached_organism(tmp_path):
    """A complete organism cache folder (no build: the test is about copying)."""
    from refusalscope.organism.build import MANIFEST, OrganismConfig, cache_folder

    cfg = OrganismConfig().seeded()
    folder = cache_folder(cfg)
    with atomic_folder(folder) as tmp:
        (tmp / "model").mkdir()
        (tmp / "model" / "model.safetensors").write_bytes(b"weights")
        write_json(tmp / MANIFEST, {"model_path": "model", "sae_paths": {}, "data_path": "data"})
    return cfg


def test_organism_build_out_never_deletes_a_users_files(tmp_path, monkeypatch):
    from refusalscope.organism import build

    monkeypatch.setattr(build, "_build_into", lambda *a: pytest.fail("built before the check"))
    work = tmp_path / "X"
    (work / "mywork").mkdir(parents=True)
    (work / "thesis.tex").write_text("hi")
    res = CliRunner().invoke(app, ["organism", "build", "--out", str(work)])
    assert res.exit_code == 2
    assert "thesis.tex" in res.output and "never deletes" in res.output
    assert sorted(p.name for p in work.iterdir()) == ["mywork", "thesis.tex"]
    assert (work / "thesis.tex").read_text() == "hi"
    monkeypatch.chdir(work)  # `--out .` in a working directory with files
    res = CliRunner().invoke(app, ["organism", "build", "--out", "."])
    assert res.exit_code == 2 and sorted(os.listdir(work)) == ["mywork", "thesis.tex"]


def test_organism_copies_go_to_new_folders_and_replace_only_earlier_copies(
    tmp_path, cached_organism
):
    from refusalscope.organism.build import build_organism

    out = tmp_path / "org"
    for _ in range(2):  # a new folder, then our own earlier copy
        organism = build_organism(cached_organism, out=out)
        assert organism.folder == out
        assert (out / "model" / "model.safetensors").read_bytes() == b"weights"
        assert read_json(out / MARKER)["kind"] == "organism"
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RefusalScopeError, match="also holds notes.txt"):
        build_organism(cached_organism, out=out)
    assert (out / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------ content keys
def test_fingerprints_follow_content_not_paths(tmp_path, monkeypatch):
    a = tmp_path / "a"
    a.mkdir()
    save_file({"w": __import__("torch").zeros(4)}, a / "model.safetensors")
    (a / "config.json").write_text("{}")
    key = folder_fingerprint(a)
    shutil.copytree(a, tmp_path / "moved")
    assert folder_fingerprint(tmp_path / "moved") == key  # moving keeps the key
    w = load_file(a / "model.safetensors")["w"]
    w[1] = 1.0  # same size, same path, other weights
    save_file({"w": w}, a / "model.safetensors")
    assert folder_fingerprint(a) != key
    # unchanged files are not read again (hashes remembered by size and mtime)
    calls = []
    monkeypatch.setattr(cache, "sha256_file", lambda p: calls.append(p) or "x")
    folder_fingerprint(a)
    assert calls == []


# ------------------------------------------------------------ interrupts
def test_ctrl_c_says_which_stages_finished_and_how_to_resume(tmp_path, monkeypatch):
    from refusalscope.pipeline import run as pipeline_run

    def interrupted(cfg, force=None, on_stage=None):
        on_stage("prompts", {})
        on_stage("direction", {})
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_run, "run", interrupted)
    res = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "out")])
    assert res.exit_code == 130
    assert "finished and cached: prompts, direction" in res.output
    assert "Rerun the same command to resume" in res.output
    assert not (tmp_path / "out").exists()


def test_run_checks_out_before_any_work(tmp_path, monkeypatch):
    from refusalscope.pipeline import run as pipeline_run

    monkeypatch.setattr(pipeline_run, "run", lambda *a, **k: pytest.fail("ran"))
    (tmp_path / "out").write_text("a file")
    res = CliRunner().invoke(app, ["run", "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "is a file; give a folder" in res.output


def test_k_star_larger_than_the_pool_is_refused_before_loading(monkeypatch):
    from refusalscope.pipeline import context
    from refusalscope.pipeline.config import RunConfig
    from refusalscope.runtime.config import from_dict

    monkeypatch.setattr(context, "build_organism", lambda *a, **k: pytest.fail("loaded"))
    cfg = from_dict(RunConfig, {"evaluation": {"k_star": 61, "use_sweep": False}})
    with pytest.raises(RefusalScopeError, match="k_star = 61 is larger than .* pool of 60"):
        context.load_context(cfg)
    raw = {"candidates": {"k_per_layer": 5}, "evaluation": {"sweep_k": [40, 50]}}
    with pytest.raises(RefusalScopeError, match=r"sweep_k \[40, 50\] is larger .* pool of 30"):
        context.load_context(from_dict(RunConfig, raw))


def _save_over_the_limit(path: str, queue) -> None:
    import resource

    import torch

    from refusalscope.runtime.files import save_tensors

    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    try:
        save_tensors(Path(path), {"a": torch.zeros(10_000)})
        queue.put("written")
    except OSError as e:
        queue.put(f"OSError: {e}")


def test_a_safetensors_write_failure_is_an_os_error(tmp_path):
    """safetensors reports I/O errors as its own exception type; the output swap only
    turns OSErrors into the clear full-disk message."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_save_over_the_limit, args=(str(tmp_path / "t.safetensors"), queue))
    child.start()
    child.join(30)
    assert queue.get(timeout=5).startswith("OSError: t.safetensors: ")
    assert list(tmp_path.iterdir()) == []
