"""The stages after the method on the reduced organism: the analyses, exact patching and
the circuit, a second judge on every generation (with agreement) and lm-eval benchmarks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from refusalscope.evaluation.lm_eval_tasks import LMEvalConfig
from refusalscope.evaluation.stats import agreement
from refusalscope.judges.substring import SubstringJudge
from refusalscope.pipeline.outputs import load_run, write_outputs
from refusalscope.pipeline.run import run as run_pipeline
from refusalscope.runtime.files import load_tensors
from refusalscope.runtime.types import Prompt
from tests.pipeline.runs import METHODS, small_run

pytestmark = pytest.mark.slow


def test_a_second_judge_rejudges_every_generation(first_run):
    res, out = first_run
    j = json.loads((out / "results.json").read_text())["judges"]
    assert j["names"] == ["organism", "substring"]
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert all(r["judgements"]["organism"] == r["judgement"] for r in rows)
    direct = SubstringJudge().judge(
        [Prompt(r["prompt"]) for r in rows], [r["response"] for r in rows]
    )
    assert [r["judgements"]["substring"] for r in rows] == direct
    assert [r["judges_disagree"] for r in rows] == [
        r["judgement"] != d for r, d in zip(rows, direct, strict=True)
    ]
    want = agreement([r["judgement"] for r in rows], direct)
    assert j["agreement"]["organism vs substring"] == want
    jb = [(r, d) for r, d in zip(rows, direct, strict=True) if r["eval"] == "jailbreak"]
    fstar = [d for r, d in jb if r["method"] == "fstar"]
    assert j["tables"]["substring"]["jailbreak"]["fstar"]["complied"] == pytest.approx(
        fstar.count("complied") / len(fstar)
    )
    assert "Judges and their agreement" in (out / "report.html").read_text()


def test_lm_eval_benchmarks_run_under_every_method(first_run, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    data = Path(__file__).resolve().parents[1] / "evaluation" / "lm_eval_data"
    for f in data.iterdir():
        shutil.copy(f, tmp_path)
    monkeypatch.chdir(tmp_path)  # the task's data_files are relative, as lm-eval reads them
    tasks = LMEvalConfig(
        tasks=("refusalscope_tiny_mc",), include_path=str(tmp_path), limit=4, batch_size=4
    )
    res = run_pipeline(small_run(lm_eval=tasks))
    stages = res.summary["stages"]
    assert not stages["lm_eval"]["cached"]
    assert stages["jailbreak"]["cached"] and stages["judges"]["cached"]  # nothing else reran
    metrics = res.summary["lm_eval"]["metrics"]
    assert set(metrics) == METHODS and res.summary["lm_eval"]["n"] == {"refusalscope_tiny_mc": 4}
    assert all(0 <= m["refusalscope_tiny_mc"]["acc,none"] <= 1 for m in metrics.values())
    write_outputs(res, tmp_path / "out")
    back = load_run(tmp_path / "out")
    assert back.lm_eval.metrics == res.lm_eval.metrics and len(back.lm_eval.samples) > 0


def test_the_analyses_write_their_sections(first_run):
    res, out = first_run
    r = json.loads((out / "results.json").read_text())
    c = r["categories"]
    assert set(c) >= {"common", "specific", "jailbreak", "transfer", "selectivity", "overlap"}
    cats = c["categories"]
    assert len(cats) == 8 and set(c["transfer"]) == set(cats)
    assert all(set(row) == set(cats) for row in c["transfer"].values())
    assert all(set(v) == {"specific", "common", "all"} for v in c["jailbreak"].values())
    sizes = {len(v) for v in c["specific"].values()}
    assert len(sizes) == 1  # truncated to one size
    assert all(len(c["selectivity"][k]) == len(v) for k, v in c["specific"].items())
    j = r["jailbreak_analysis"]
    assert "last 2 prompt positions" in j["rule"]  # the organism's template: <|end|><|assistant|>
    assert {"successful", "failed"} <= set(j["groups"])
    assert {f"wrapper:{w}" for w in ("freebot", "ignore", "devmode", "fiction")} <= set(j["groups"])
    for g in j["groups"].values():
        assert {"n", "harm_drop", "refusal_drop", "harm_drop_ci95", "refusal_drop_ci95"} <= set(g)
    assert j["n_pairs"] == 32 and j["features"]
    p = r["probes"]
    assert p["k"] == 4  # K* of the small run's features is 4 < probe_k = 7
    for part in ("in_distribution", "ood"):
        assert set(p[part]) == {"refusal_features", "random", "dense", "direction"}
    assert {"accuracy", "auroc", "accuracy_ci95"} <= set(p["ood"]["refusal_features"])
    assert "layer" in p["detail"]["dense"]
    back = load_run(out)
    assert back.analyses.categories.table == c and back.analyses.probes.table == p
    assert back.analyses.jailbreak_analysis.rows == res.analyses.jailbreak_analysis.rows
    html = (out / "report.html").read_text()
    for title in ("Harm categories", "Jailbreak prompts", "Probes"):
        assert title in html


def test_faithfulness_and_circuit_write_their_sections(first_run):
    res, out = first_run
    r = json.loads((out / "results.json").read_text())
    f = r["faithfulness"]
    methods = {"cossim", "actdiff", "ap", "fstar", "atp"}
    assert set(f["spearman"]) == methods and set(f["precision_at_k"]) == methods
    assert all({"mean", "ci95"} <= set(v) for v in f["spearman"].values())
    assert methods | {"exact_top", "direction"} == set(f["joint_effect"])
    assert "joint/left/3" in f["variants"] and f["variants"]["joint/left/3"]["default"]
    assert all({"spearman", "seconds"} <= set(v) for v in f["variants"].values())
    assert {"k", "mean"} <= set(f["prefilter_recall"]) and f["prefilter_recall"]["n_prompts"] == 2
    t = load_tensors(out / "faithfulness.safetensors")
    test = res.attribution["test"]
    n, E = len(test.score), len(t["candidates"])
    assert t["exact_effect"].shape == (n, E) and t["exact_effect"].dtype == torch.float32
    assert t["candidates"].shape == (E, 2) and t["in_pool"].sum() == len(test.candidates)
    assert torch.equal(t["input_ids"], test.input_ids) and torch.equal(t["jb_token"], test.jb_token)
    assert torch.equal(t["position_mask"], test.position_mask)
    assert int(t["ref_token"]) == test.ref_token
    c = r["circuit"]
    assert {"relative_drop", "relative_drop_ci95", "edges", "edge_spearman"} <= set(c)
    assert c["edges"] and {"from", "to", "predicted", "measured"} == set(c["edges"][0])
    graph = json.loads((out / "circuit_graph.json").read_text())
    assert len(graph["nodes"]) == 10 and graph["edges"] == c["edges"]
    back = load_run(out).ground_truth
    assert back.faithfulness.table == f and back.circuit.table == c
    assert torch.equal(back.faithfulness.tensors["exact_effect"], t["exact_effect"])
