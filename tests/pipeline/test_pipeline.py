"""`refusalscope run` end to end on the reduced organism: outputs, cache, bad input."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from refusalscope.cli import app
from refusalscope.pipeline.config import STAGES, ModelConfig, SAESourceConfig
from refusalscope.pipeline.context import load_context
from refusalscope.pipeline.outputs import load_run, write_outputs
from refusalscope.pipeline.run import run as run_pipeline
from refusalscope.report.browser import check_page, find_chromium
from refusalscope.runtime import cache
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.stages.prompts import PromptConfig
from tests.pipeline.runs import METHODS, small_run

pytestmark = pytest.mark.slow


def test_writes_the_four_artifacts_with_their_keys(first_run):
    res, out = first_run
    r = json.loads((out / "results.json").read_text())
    for key in (
        "config",
        "versions",
        "direction",
        "jailbreak",
        "capability",
        "induction",
        "sweep",
        "features",
        "stages",
    ):
        assert key in r
    assert set(r["direction"]) >= {"layer", "sweep"}
    assert all(set(v) == {"jailbreak", "harmless_ok"} for v in r["direction"]["sweep"].values())
    assert set(r["jailbreak"]) == METHODS
    for row in r["jailbreak"].values():
        assert set(row) == {"n", "complied", "refused", "degenerate", "complied_ci95"}
        low, high = row["complied_ci95"]
        assert row["n"] == 10 and low <= row["complied"] <= high
    assert set(r["jailbreak_vs_fstar"]) == METHODS - {"fstar"}
    for cmp in r["jailbreak_vs_fstar"].values():
        assert set(cmp) == {"reference_only", "other_only", "p_value"} and 0 < cmp["p_value"] <= 1
    assert set(r["capability"]) == METHODS
    for row in r["capability"].values():
        assert set(row) == {"ce_responses", "ce_text", "harmless_complied"}
        assert row["ce_responses"] > 0 and row["ce_text"] > 0
    assert set(r["induction"]) == {"fstar", "cossim", "add_direction"}
    assert len(r["features"]["global"]) == r["steering"]["k_star"]
    assert all(len(x) == 3 for x in r["features"]["global"])
    assert set(r["stages"]) == set(STAGES) - {"lm_eval"}  # no lm_eval configured

    attr = load_file(str(out / "attribution.safetensors"))
    n = attr["score"].shape[0]
    assert attr["candidates"].shape == (10, 2)  # 5 per layer x 2 layers
    assert attr["score"].shape[1] == 10
    assert (
        attr["input_ids"].shape == attr["position_mask"].shape and attr["input_ids"].shape[0] == n
    )
    assert attr["position_mask"].dtype == torch.bool
    direction = load_file(str(out / "direction.safetensors"))
    assert direction["r"].shape == (2, 96) and int(direction["layer"]) == r["direction"]["layer"]
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert {row["method"] for row in rows if row["eval"] == "jailbreak"} == METHODS
    assert all({"prompt", "method", "response", "judgement"} <= set(row) for row in rows)
    assert "<table>" in (out / "report.html").read_text()


def test_the_method_finds_the_planted_refusal(first_run):
    """Behaviour, not keys: what must hold if the method works on the organism.

    The reduced organism is small and its test split has 10 prompts, so the margins are
    wide; the full organism's numbers are in the README.
    """
    r = first_run[0].summary
    d = r["direction"]
    # the direction sweep picks a layer whose ablation jailbreaks (and it is the best one)
    assert d["base"]["jailbreak"] == 0.0
    assert d["sweep"][str(d["layer"])]["jailbreak"] >= 0.25
    assert d["sweep"][str(d["layer"])]["jailbreak"] == max(
        v["jailbreak"] for v in d["sweep"].values()
    )
    # clamping F*, like ablating the direction, removes refusals the base model makes
    jb = r["jailbreak"]
    assert jb["base"]["refused"] >= 0.9 and jb["base"]["complied"] == 0.0
    for method in ("fstar", "ablate_direction"):
        assert jb[method]["refused"] <= 0.5, method
        assert jb[method]["complied"] >= jb["base"]["complied"] + 0.2, method
    # refusal induction: setting F* (or adding the direction) makes harmless prompts refused
    ind = r["induction"]
    f_values = sorted(ind["fstar"], key=float)
    assert float(f_values[0]) == 0.0
    assert ind["fstar"][f_values[1]] >= ind["fstar"][f_values[0]] + 0.5
    assert ind["add_direction"]["1.0"] >= ind["add_direction"]["0.0"] + 0.5


def test_cards_and_the_report_rebuild_from_the_output_folder_alone(
    first_run, tmp_path, monkeypatch
):
    """Every selected feature has a card; `refusalscope report` on a copy of the folder,
    with an empty cache, writes the same page; every feature link lands on a card; no
    path of this machine is on the page; the browser check passes where Chromium is."""
    res, out = first_run
    r = res.summary
    cards = json.loads((out / "cards.json").read_text())["cards"]
    assert r["explain"]["n_cards"] == len(cards) > 0
    ids = {c["id"] for c in cards}
    for layer, latent, _ in r["features"]["global"]:
        assert f"f-L{layer}-{latent}" in ids
    top = cards[0]
    assert top["picked_by"][0] == "F* #1" and top["contexts"] and top["logit_lens"]["top"]
    assert top["laig"]["n"] == len(res.prompts.splits["harmful_test"])
    assert top["labels"] and top["clamp_effect"]["n"] > 0
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    monkeypatch.setenv("REFUSALSCOPE_CACHE", str(tmp_path / "empty-cache"))
    result = CliRunner().invoke(app, ["report", str(copy), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "r.html").read_text()
    assert page == (out / "report.html").read_text()
    assert set(re.findall(r'href="#(f-L\d+-\d+)"', page)) <= ids
    for c in cards:
        assert f'id="{c["id"]}"' in page
    for path in (str(out), str(tmp_path), str(cache.cache_root()), str(Path.home())):
        assert path not in page
    if find_chromium() is not None:
        check = check_page(tmp_path / "r.html")
        assert check.ok, check.errors


def test_the_top_edge_has_the_right_sign(first_run):
    """On the organism the strongest measured edge between F* latents is predicted with
    its sign by the gradient (SAE-free, errors kept)."""
    edges = first_run[0].summary["circuit"]["edges"]
    top = max(edges, key=lambda e: abs(e["measured"]))
    assert abs(top["measured"]) > 1e-3
    assert (top["predicted"] > 0) == (top["measured"] > 0)


def test_the_analyses_recover_what_the_organism_plants(first_run):
    """Ground truth the reduced organism shows (seed 0, 10 test prompts, 32 pairs), and
    why: its failing wrappers were trained to still refuse, so every pair under one is a
    failed jailbreak; and the jailbreaks that do work suppress the refusal features (read
    at the template's end) much more than the failing ones. Not asserted, because the
    reduced organism does not show them: a category-specific path (its transfer matrix is
    all zeros at the chosen c and K*, one specific feature per category) and a harm-feature
    drop (almost every F* feature attributes at the end of the prompt here)."""
    r = first_run[0].summary
    j = r["jailbreak_analysis"]
    rows = first_run[0].analyses.jailbreak_analysis.rows
    failing = [x for x in rows if x["kind"] in ("fiction", "hypothetical", "school")]
    assert failing and all(x["judgement"] != "complied" for x in failing)
    d = j["difference"]
    assert d["refusal_drop"] > 0.2 and d["refusal_drop_ci95"][0] > 0
    p = r["probes"]["in_distribution"]
    assert p["refusal_features"]["auroc"] > p["random"]["auroc"]


def test_unchanged_config_reuses_every_stage(first_run):
    res = run_pipeline(small_run())
    assert all(s["cached"] for s in res.summary["stages"].values())
    assert res.summary["jailbreak"] == first_run[0].summary["jailbreak"]


def test_editing_the_report_keeps_every_cached_stage(first_run, tmp_path, monkeypatch):
    """A stage's key covers the code it runs, found from its imports: an edit to the
    report (or the CLI, or the orchestrator) recomputes nothing."""
    copy = tmp_path / "refusalscope"
    shutil.copytree(cache.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "report" / "html.py").open("a") as f:
        f.write("\n# a change to the report\n")
    monkeypatch.setattr(cache, "PACKAGE_ROOT", copy)
    cache.code_fingerprint.cache_clear()
    try:
        res = run_pipeline(small_run())
    finally:
        cache.code_fingerprint.cache_clear()
    assert all(s["cached"] for s in res.summary["stages"].values())
    assert res.summary["cache_keys"] == first_run[0].summary["cache_keys"]


def test_load_run_reads_back_every_artifact(first_run):
    res, out = first_run
    back = load_run(out)
    assert back.summary == json.loads((out / "results.json").read_text())
    assert back.prompts.splits == res.prompts.splits
    assert torch.equal(back.direction.r, res.direction.r)
    assert (
        back.direction.layer == res.direction.layer and back.direction.sweep == res.direction.sweep
    )
    k = res.summary["steering"]["k_star"]
    got, want = (
        back.features.per_prompt("fstar", "test", k),
        res.features.per_prompt("fstar", "test", k),
    )
    assert len(got) == len(res.prompts.splits["harmful_test"]) == len(want)
    assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    for split in ("train", "test"):
        a, b = back.attribution[split], res.attribution[split]
        assert torch.equal(a.score, b.score) and torch.equal(a.all_top, b.all_top)
        assert (a.input_ids[a.position_mask] == b.input_ids[b.position_mask]).all()
    assert back.attribution["train"].all_mean.keys() == res.attribution["train"].all_mean.keys()
    assert back.sweep == res.sweep
    assert back.jailbreak.rows == res.jailbreak.rows
    assert back.capability == res.capability and back.induction == res.induction
    assert back.generations == res.generations
    assert back.cards.cards == res.cards.cards and back.cards.examples == res.cards.examples


def test_load_run_refuses_other_folders(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(RefusalScopeError, match="not a refusalscope run output"):
        load_run(tmp_path)


def test_load_run_names_what_an_older_output_lacks(first_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(first_run[1], old)
    (old / "features.safetensors").unlink()
    with pytest.raises(RefusalScopeError, match="lacks features.safetensors .*older refusalscope"):
        load_run(old)


def test_changed_config_recomputes_from_that_stage(first_run):
    ev = dataclasses.replace(small_run().evaluation, n_induction=4)
    res = run_pipeline(small_run(evaluation=ev))
    stages = res.summary["stages"]
    assert all(stages[s]["cached"] for s in ("prompts", "direction", "attribution", "features"))
    assert not stages["induction"]["cached"] and not stages["sweep"]["cached"]


def test_an_analysis_setting_recomputes_only_that_analysis(first_run):
    a = dataclasses.replace(small_run().analysis, probe_random_draws=2)
    stages = run_pipeline(small_run(analysis=a)).summary["stages"]
    assert stages["categories"]["cached"] and stages["jailbreak_analysis"]["cached"]
    assert not stages["probes"]["cached"]


def test_force_recomputes_a_stage_and_later_ones(first_run):
    res = run_pipeline(small_run(), force="jailbreak")
    stages = res.summary["stages"]
    assert stages["sweep"]["cached"] and not stages["jailbreak"]["cached"]
    assert not stages["induction"]["cached"]
    assert res.summary["jailbreak"] == first_run[0].summary["jailbreak"]  # deterministic


def test_bad_inputs_give_one_clear_error(first_run, tiny_organism, tmp_path):
    with pytest.raises(RefusalScopeError, match="--force takes one of"):
        run_pipeline(small_run(), force="nonsense")
    # an SAE for a layer the model lacks
    folders = {5: str(tiny_organism.sae_paths[0])}
    with pytest.raises(RefusalScopeError, match="layer"):
        run_pipeline(small_run(saes=SAESourceConfig(folders=folders)))
    # K* larger than the candidate pool
    ev = dataclasses.replace(small_run().evaluation, k_star=50, use_sweep=False, sweep_k=(50,))
    with pytest.raises(RefusalScopeError, match="exceeds|larger than"):
        run_pipeline(small_run(evaluation=ev))


def test_sae_of_the_wrong_width_is_rejected(tiny_organism, tmp_path):
    from sae_lens import TopKSAE, TopKSAEConfig

    sae = TopKSAE(TopKSAEConfig(d_in=32, d_sae=64, k=4))
    sae.save_model(tmp_path / "wrong")
    with pytest.raises(RefusalScopeError, match="d_in=32"):
        run_pipeline(small_run(saes=SAESourceConfig(folders={0: str(tmp_path / "wrong")})))


def test_empty_split_after_filtering_is_an_error(tiny_organism, tmp_path):
    harmless_only = tmp_path / "harmless.json"
    harmless_only.write_text(json.dumps([{"instruction": "Tell me how to bake a cake."}] * 4))
    files = {
        "harmful_train": str(harmless_only),  # nothing here is refused
        "harmful_test": str(harmless_only),
        "harmless_train": str(harmless_only),
        "harmless_test": str(harmless_only),
    }
    prompts = PromptConfig(files=files, n_train=4, n_val=1, n_test=2, filter_max_new_tokens=8)
    with pytest.raises(RefusalScopeError, match="empty after filtering"):
        run_pipeline(small_run(prompts=prompts, judge="substring", judges=()))


def _copy_model_and_saes(organism, root):
    shutil.copytree(organism.model_path, root / "model")
    for layer, path in organism.sae_paths.items():
        shutil.copytree(path, root / f"sae{layer}")
    splits = root / "splits"
    splits.mkdir()
    for name, prompts in organism.data().splits.items():
        rows = [{"instruction": p.instruction, "category": p.category} for p in prompts]
        (splits / f"{name}.json").write_text(json.dumps(rows))
    return small_run(
        model=ModelConfig(path=str(root / "model")),
        saes=SAESourceConfig(folders={l: str(root / f"sae{l}") for l in organism.sae_paths}),
        prompts=dataclasses.replace(small_run().prompts, dataset_dir=str(root)),
        judge="organism",
    )


def test_cache_keys_follow_contents_not_paths(tiny_organism, tmp_path):
    """Moving the model and SAEs keeps every key; other weights at the same path change
    the model's (and so every stage's) or the SAEs' (candidates on) key."""
    cfg = _copy_model_and_saes(tiny_organism, tmp_path / "a")
    a = load_context(cfg)
    moved = load_context(_copy_model_and_saes(tiny_organism, tmp_path / "b"))
    assert (moved.model_key, moved.sae_keys) == (a.model_key, a.sae_keys)

    weights = tmp_path / "a" / "model" / "model.safetensors"
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("mlp.up_proj.weight"))
    tensors[name] = tensors[name] * 1.01  # same shapes, same size, same path
    save_file(tensors, weights, metadata={"format": "pt"})
    swapped = load_context(cfg)
    assert swapped.model_key != a.model_key and swapped.sae_keys == a.sae_keys

    sae_file = tmp_path / "a" / "sae1" / "sae_weights.safetensors"
    sae = load_file(sae_file)
    sae["W_dec"] = sae["W_dec"].flip(0)
    save_file(sae, sae_file)
    assert load_context(cfg).sae_keys[1] != a.sae_keys[1]


def test_a_nan_in_an_sae_fails_before_any_stage(tiny_organism, tmp_path, organism_cache):
    cfg = _copy_model_and_saes(tiny_organism, tmp_path)
    sae_file = tmp_path / "sae1" / "sae_weights.safetensors"
    sae = load_file(sae_file)
    sae["W_dec"][3, 7] = float("nan")
    save_file(sae, sae_file)
    before = sorted((organism_cache / "runs").rglob("_COMPLETE.json"))
    with pytest.raises(RefusalScopeError, match="layer 1.*W_dec"):
        run_pipeline(cfg)
    assert sorted((organism_cache / "runs").rglob("_COMPLETE.json")) == before


def test_a_full_disk_while_writing_outputs_keeps_the_previous_set(first_run, monkeypatch):
    from refusalscope.pipeline import outputs

    res, out = first_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "write_jsonl", disk_full)
    with pytest.raises(RefusalScopeError, match="No space left on device. The previous"):
        write_outputs(res, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
