"""lm-eval tasks through ChatModelLM, checked against the same numbers computed directly
with ChatModel: summed continuation log-probs, their argmax (acc), greedy generations cut
at the stop string (exact match) and rolling log-likelihoods, with and without an
intervention."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from refusalscope.evaluation.lm_eval_tasks import (
    LMEvalResult,
    lm_class,
    require_lm_eval,
    run_lm_eval,
)
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.interventions import AddDirection

DATA = Path(__file__).parent / "lm_eval_data"
MC, GEN = "refusalscope_tiny_mc", "refusalscope_tiny_gen"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def task_dir(tmp_path, monkeypatch):
    """The local tasks in a private folder (data paths are relative to the working
    directory) with a private datasets cache."""
    pytest.importorskip("lm_eval")
    import datasets

    for f in DATA.iterdir():
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    return tmp_path


@pytest.fixture(scope="module")
def methods(tiny_chat_model):
    torch.manual_seed(1)
    r = torch.randn(tiny_chat_model.d_model)
    return {
        "base": [],
        "add": [AddDirection(r, layer=0, coeff=4.0)],
        "add_prompt": [AddDirection(r, layer=0, coeff=4.0, positions="prompt")],
    }


@torch.no_grad()
def direct_loglikelihood(model, context: str, continuation: str, ivs) -> tuple[float, bool]:
    """lm-eval's split (continuation tokens = tokens of context+continuation after those of
    the context), scored in one unpadded forward pass."""
    tok = model.tokenizer
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    with model.hooked(ivs):
        logits = model.hf(input_ids=torch.tensor([whole])).logits[0].float()
    logp = logits[len(ctx) - 1 : len(whole) - 1].log_softmax(-1)
    cont = torch.tensor(whole[len(ctx) :])
    return float(logp.gather(-1, cont[:, None]).sum()), bool((logp.argmax(-1) == cont).all())


def direct_mc(model, docs, ivs, delimiter: str, chat: bool):
    lls = []
    for doc in docs:
        context = model.format(doc["question"]) if chat else doc["question"]
        lls.append(
            [direct_loglikelihood(model, context, delimiter + c, ivs) for c in doc["choices"]]
        )
    acc = sum(
        max(range(len(x)), key=lambda i: x[i][0]) == d["answer"]
        for x, d in zip(lls, docs, strict=True)
    )
    return lls, acc / len(docs)


def responses(result: LMEvalResult, method: str, task: str) -> list:
    rows = sorted(
        (s for s in result.samples if s["method"] == method and s["task"] == task),
        key=lambda s: s["doc_id"],
    )
    return [s["responses"] for s in rows]


def test_chat_tasks_match_direct_computation(tiny_chat_model, methods, task_dir, tmp_path):
    model = tiny_chat_model
    mc_docs = read_jsonl(task_dir / "tiny_mc.jsonl")
    gen_docs = read_jsonl(task_dir / "tiny_gen.jsonl")
    questions = [d["question"] for d in gen_docs]
    # Greedy generations as lm-eval should see them: 8 tokens, cut at the stop string ".".
    gens = {
        m: [t.split(".")[0] for t in model.generate(questions, ivs, max_new_tokens=8).texts]
        for m, ivs in methods.items()
    }
    assert gens["add"] != gens["base"] and gens["add_prompt"] != gens["add"]
    targets = [gens["base"][0], gens["add"][1], gens["add_prompt"][2], "no such answer"]
    (task_dir / "tiny_gen.jsonl").write_text(
        "".join(
            json.dumps({"question": q, "target": t}) + "\n"
            for q, t in zip(questions, targets, strict=True)
        )
    )

    result = run_lm_eval(model, methods, [MC, GEN], include_path=task_dir, batch_size=3)

    for method, ivs in methods.items():
        lls, acc = direct_mc(model, mc_docs, ivs, delimiter="", chat=True)
        got = responses(result, method, MC)
        assert [[g for _, g in doc] for doc in got] == [[g for _, g in doc] for doc in lls]
        assert torch.allclose(
            torch.tensor([ll for doc in got for ll, _ in doc]),
            torch.tensor([ll for doc in lls for ll, _ in doc]),
            atol=1e-4,
        )
        assert result.metrics[method][MC]["acc,none"] == pytest.approx(acc)
        assert responses(result, method, GEN) == [[g] for g in gens[method]]
        em = sum(g == t for g, t in zip(gens[method], targets, strict=True)) / len(targets)
        assert em > 0
        assert result.metrics[method][GEN]["exact_match,none"] == pytest.approx(em)
    # The prompt is the model's own chat format of the question.
    prompts = {s["prompt"] for s in result.samples if s["task"] == MC and s["doc_id"] == 0}
    assert prompts == {model.format(mc_docs[0]["question"])}
    # The intervention moves every log-likelihood; "prompt" positions act on the whole
    # teacher-forced pass, like "all" (one prefill), but only on generation's prefill.
    base, add = responses(result, "base", MC), responses(result, "add", MC)
    diffs = [
        abs(a[0] - b[0]) for x, y in zip(base, add, strict=True) for a, b in zip(x, y, strict=True)
    ]
    assert min(diffs) > 1e-3
    assert responses(result, "add_prompt", MC) == add
    assert result.n_samples == {MC: 4, GEN: 4}
    assert result.config["methods"]["add"] == ["AddDirection"]
    assert result.versions["lm_eval"] == require_lm_eval().__version__

    result.save(tmp_path / "out")
    assert LMEvalResult.load(tmp_path / "out") == result


def test_plain_prompts_and_batch_sizes(tiny_chat_model, methods, task_dir):
    """Without the chat template: raw question, " " + choice; right padding does not leak
    (batch sizes 1 and 4 agree with the unpadded direct computation)."""
    model = tiny_chat_model
    docs = read_jsonl(task_dir / "tiny_mc.jsonl")
    ivs = {"add": methods["add"]}
    for batch_size in (1, 4):
        result = run_lm_eval(
            model,
            ivs,
            [MC],
            include_path=task_dir,
            apply_chat_template=False,
            batch_size=batch_size,
        )
        lls, acc = direct_mc(model, docs, methods["add"], delimiter=" ", chat=False)
        got = responses(result, "add", MC)
        assert torch.allclose(
            torch.tensor([ll for doc in got for ll, _ in doc]),
            torch.tensor([ll for doc in lls for ll, _ in doc]),
            atol=1e-4,
        )
        assert result.metrics["add"][MC]["acc,none"] == pytest.approx(acc)
        assert {s["prompt"] for s in result.samples if s["doc_id"] == 1} == {docs[1]["question"]}


@torch.no_grad()
def test_loglikelihood_rolling_windows(tiny_chat_model, methods):
    """Each token scored once after the BOS prefix; with a short context, in chunks of
    ``max_length`` predictions that each see up to ``max_length`` earlier tokens."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    model = tiny_chat_model
    text = "tell me a story about a dragon and a knight, then write a short poem about the sea"
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    padded = [model.tokenizer.bos_token_id, *ids]
    req = Instance("loglikelihood_rolling", doc={}, arguments=(text,), idx=0)

    def direct(L: int, ivs) -> float:
        total = 0.0
        for s in range(0, len(ids), L):
            e = min(s + L, len(ids))
            window = padded[max(0, e - L) : e]
            with model.hooked(ivs):
                logp = model.hf(input_ids=torch.tensor([window])).logits[0].float().log_softmax(-1)
            total += float(logp[-(e - s) :].gather(-1, torch.tensor(ids[s:e])[:, None]).sum())
        return total

    full = len(ids) + 5
    for ivs in ([], methods["add"]):
        for L in (full, 3):
            lm = lm_class()(model, ivs, batch_size=2, max_length=L)
            assert lm.loglikelihood_rolling([req, req]) == pytest.approx([direct(L, ivs)] * 2)
    # The windows matter (the tiny random model uses its context only a little).
    assert direct(3, []) != pytest.approx(direct(full, []), abs=1e-2)
    assert direct(full, methods["add"]) != pytest.approx(direct(full, []), abs=1e-2)


def test_sampling_tasks_and_per_prompt_interventions_are_refused(tiny_chat_model, task_dir):
    from lm_eval.api.instance import Instance

    lm = lm_class()(tiny_chat_model)
    req = Instance("generate_until", doc={}, arguments=("hi", {"do_sample": True}), idx=0)
    with pytest.raises(RefusalScopeError, match="do_sample: false"):
        lm.generate_until([req])

    class PerPrompt(AddDirection):
        def select(self, rows):
            return AddDirection(self.direction, self.layer)

    pp = PerPrompt(torch.zeros(tiny_chat_model.d_model), layer=0)
    with pytest.raises(RefusalScopeError, match="per-prompt PerPrompt"):
        run_lm_eval(tiny_chat_model, {"pp": [pp]}, [MC], include_path=task_dir)


def test_missing_lm_eval_says_how_to_install(tiny_chat_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval -> ImportError
    with pytest.raises(RefusalScopeError, match=r"pip install 'refusalscope\[eval\]'"):
        run_lm_eval(tiny_chat_model, {"base": []}, [MC], include_path=tmp_path)
    with pytest.raises(RefusalScopeError, match="no lm_eval.json"):
        LMEvalResult.load(tmp_path)
