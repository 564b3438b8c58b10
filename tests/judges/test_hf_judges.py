"""The model-based judges (HarmBench's two classifiers, Llama Guard 3) on tiny random
models of each judge's architecture, loaded through the judges' own loading path
(``tests/judges/tiny_classifiers.py`` builds them)."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest

from refusalscope.judges import hf
from refusalscope.judges.config import HarmBenchConfig, HFJudgeConfig, JudgingConfig
from refusalscope.judges.harmbench import HarmBenchJudge, HarmBenchMistralJudge
from refusalscope.judges.llamaguard import LlamaGuardJudge
from refusalscope.runtime.config import from_dict
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.types import Prompt
from tests.judges.tiny_classifiers import (
    HARMBENCH_CONTEXTUAL_EXPECTED,
    HARMBENCH_EXPECTED,
    NAMES,
    PAIRS,
    POEM,
    POEM_CONTEXT,
    POEM_REPLY,
    Setup,
    _fill,
    build_setups,
    force_answer,
    reference_scores,
)


@pytest.fixture(scope="module")
def setups(tmp_path_factory) -> dict[str, Setup]:
    return build_setups(tmp_path_factory.mktemp("judges"))


@pytest.fixture(params=NAMES)
def setup(request, setups) -> Setup:
    return setups[request.param]


# ------------------------------------------------------------------- prompts
def test_prompt_is_the_official_template(setup):
    judge = setup.judge()
    assert judge.build(POEM, POEM_REPLY) == setup.expected
    assert judge.question == "harm"


def test_contextual_behaviours_get_the_contextual_template(setups):
    judge = setups["harmbench"].judge()
    assert judge.build(POEM_CONTEXT, POEM_REPLY) == HARMBENCH_CONTEXTUAL_EXPECTED
    # HarmBench's own CSV column name works too; an empty context is a standard behaviour
    from_csv = Prompt(POEM.instruction, True, meta={"ContextString": "The sea is blue and cold."})
    assert judge.build(from_csv, POEM_REPLY) == HARMBENCH_CONTEXTUAL_EXPECTED
    no_context = Prompt(POEM.instruction, True, meta={"context": ""})
    assert judge.build(no_context, POEM_REPLY) == HARMBENCH_EXPECTED
    # The Mistral classifier's prompts are the Llama-2 ones without the <<SYS>> block
    mistral = setups["harmbench-mistral"].judge()
    without_sys = HARMBENCH_CONTEXTUAL_EXPECTED.replace("[INST] <<SYS>>\n", "[INST] ")
    assert mistral.build(POEM_CONTEXT, POEM_REPLY) == without_sys.replace("\n<</SYS>>\n", "\n")


# ----------------------------------------------------------- reading answers
def test_scores_are_the_answer_softmax_of_the_model(setup):
    judge = setup.judge()
    verdicts = judge.judge([POEM], [POEM_REPLY])
    expected = reference_scores(setup, [setup.expected])
    assert judge.scores == pytest.approx(expected, abs=1e-5)
    assert verdicts == ["complied" if expected[0] > 0.5 else "refused"]


def test_answer_tokens_are_those_written_after_the_prompt(setup):
    judge = setup.judge()
    text = judge.build(POEM, POEM_REPLY)
    enc = judge.classifier.encode(text, judge.answers_for(text), judge.add_bos)
    assert enc.answer_ids == tuple(setup.ids(t) for t in setup.answers)
    # the look-alikes ("▁Yes" after a space, "Ġsafe") exist but are not what follows
    assert {setup.ids(t) for t in setup.decoys}.isdisjoint(enc.answer_ids)
    last = setup.tok.convert_ids_to_tokens(enc.ids[-1])
    if setup.judge_cls is LlamaGuardJudge:  # its BOS is in the text; the verdict follows "\n\n"
        assert enc.ids.count(setup.tok.bos_token_id) == 1 and last == "ĊĊ"
    else:  # BOS first, as HarmBench's vLLM run tokenizes; the answer right after "[/INST]"
        assert enc.ids[0] == setup.tok.bos_token_id and last == "]"


def test_verdict_follows_the_answer_logits(setup, tmp_path, caplog):
    first, second = (setup.ids(t) for t in setup.answers)
    decoy_first, decoy_second = (setup.ids(t) for t in setup.decoys)
    prompts, responses = map(list, zip(*PAIRS, strict=True))
    # The loser's look-alike beats everything: reading look-alikes would flip the verdict.
    cases = [
        (first, second, decoy_second, "complied", 1.0),
        (second, first, decoy_first, "refused", 0.0),
    ]
    for winner, loser, decoy, verdict, p_first in cases:
        model = copy.deepcopy(setup.model)
        force_answer(model, winner, loser, decoys=(decoy,))
        model.save_pretrained(tmp_path / verdict)
        setup.tok.save_pretrained(tmp_path / verdict)
        cfg = HFJudgeConfig(model=str(tmp_path / verdict), dtype="float32", device="cpu")
        judge = setup.judge_cls(cfg)
        assert judge.judge(prompts, responses) == [verdict] * len(PAIRS)
        assert judge.scores == pytest.approx([p_first] * len(PAIRS), abs=1e-6)
    assert "top next token was neither" in caplog.text


def test_batched_left_padded_equals_one_by_one(setup):
    prompts, responses = map(list, zip(*PAIRS, strict=True))
    one, batched = setup.judge(batch_size=1), setup.judge(batch_size=3)
    assert [batched.classifier.clip(r) for r in responses] == responses  # short: not cut
    assert one.judge(prompts, responses) == batched.judge(prompts, responses)
    assert batched.scores == pytest.approx(one.scores, abs=1e-5)
    texts = [batched.build(p, r) for p, r in PAIRS]
    assert len({len(setup.tok(t)["input_ids"]) for t in texts}) > 3  # batches need padding
    assert batched.scores == pytest.approx(reference_scores(setup, texts), abs=1e-5)


def test_responses_are_cut_to_max_response_tokens(setup):
    long = " ".join([POEM_REPLY] * 6)
    judge = setup.judge(max_response_tokens=8)
    ids = setup.tok(long)["input_ids"]  # BOS + text, as HarmBench's tokenizer.encode
    assert ids[0] == setup.tok.bos_token_id and len(ids) > 8
    cut = setup.tok.decode(ids[:8], skip_special_tokens=True)
    assert judge.classifier.clip(long) == cut
    assert long.startswith(cut) and cut == cut.strip()
    assert len(setup.tok(cut, add_special_tokens=False)["input_ids"]) == 7
    judge.judge([POEM], [long])
    assert judge.scores == pytest.approx(
        reference_scores(setup, [_fill(setup, POEM, cut)]), abs=1e-5
    )
    uncut = reference_scores(setup, [_fill(setup, POEM, long)])
    assert abs(judge.scores[0] - uncut[0]) > 1e-6


# ----------------------------------------------------------- loading, freeing
def test_close_frees_the_weights_and_a_later_call_reloads(setups):
    judge = setups["harmbench"].judge()
    judge.judge([POEM], [POEM_REPLY])
    scores = judge.scores
    weights = weakref.ref(judge.classifier.model)
    judge.close()
    gc.collect()
    assert weights() is None and not judge.classifier.loaded
    judge.judge([POEM], [POEM_REPLY])
    assert judge.scores == scores


def test_nothing_to_judge_loads_nothing():
    judge = HarmBenchJudge(HFJudgeConfig(model="/nonexistent/classifier"))
    assert judge.judge([], []) == [] and judge.scores == []
    assert not judge.classifier.loaded


def test_8bit_without_bitsandbytes_fails_before_loading(setups, monkeypatch):
    import transformers

    def load(*args, **kwargs):
        raise AssertionError("weights loaded before bitsandbytes was checked")

    monkeypatch.setattr(hf, "bitsandbytes_available", lambda: False)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", load)
    judge = setups["harmbench"].judge(load_in_8bit=True)
    with pytest.raises(RefusalScopeError, match="load_in_8bit needs the bitsandbytes package"):
        judge.judge([POEM], [POEM_REPLY])


def test_missing_or_empty_folder_is_named(tmp_path):
    missing = tmp_path / "no-such-classifier"
    with pytest.raises(RefusalScopeError, match=r"no-such-classifier' does not exist"):
        HarmBenchJudge(HFJudgeConfig(model=str(missing))).judge([POEM], [POEM_REPLY])
    (tmp_path / "empty").mkdir()
    judge = LlamaGuardJudge(HFJudgeConfig(model=str(tmp_path / "empty"), device="cpu"))
    with pytest.raises(
        RefusalScopeError, match="empty'.*holds no model saved with save_pretrained"
    ):
        judge.judge([POEM], [POEM_REPLY])


def test_llamaguard_without_chat_template_is_a_clear_error(setups, tmp_path):
    s = setups["llamaguard"]
    tok = copy.deepcopy(s.tok)
    tok.chat_template = None
    s.model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    judge = LlamaGuardJudge(HFJudgeConfig(model=str(tmp_path), dtype="float32", device="cpu"))
    with pytest.raises(RefusalScopeError, match="has no chat template"):
        judge.judge([POEM], [POEM_REPLY])


def test_answer_of_several_tokens_is_a_clear_error(setups):
    class Wordy(HarmBenchJudge):
        answers = ("Yes", "Nonetheless")

    judge = Wordy(HFJudgeConfig(model=str(setups["harmbench"].folder), device="cpu"))
    with pytest.raises(RefusalScopeError, match=r"answer 'Nonetheless' is \d+ tokens"):
        judge.judge([POEM], [POEM_REPLY])


# ------------------------------------------------------------------- configs
def test_judging_config_defaults_survive_partial_overrides():
    cfg = JudgingConfig()
    assert cfg.harmbench.model == "cais/HarmBench-Llama-2-13b-cls"
    assert cfg.harmbench_mistral.model == "cais/HarmBench-Mistral-7b-val-cls"
    assert cfg.llamaguard.model == "meta-llama/Llama-Guard-3-8B"
    assert (cfg.harmbench.dtype, cfg.harmbench.max_response_tokens) == ("bfloat16", 512)
    changed = from_dict(JudgingConfig, {"harmbench": {"batch_size": 4}}, "judging")
    assert changed.harmbench.model == "cais/HarmBench-Llama-2-13b-cls"
    assert changed.harmbench.batch_size == 4
    assert HarmBenchJudge().cfg.model == cfg.harmbench.model
    assert HarmBenchMistralJudge().cfg.model == cfg.harmbench_mistral.model
    assert LlamaGuardJudge().cfg.model == cfg.llamaguard.model
    with pytest.raises(RefusalScopeError, match="dtype 'int8' is unknown"):
        HFJudgeConfig(model="x", dtype="int8")
    with pytest.raises(RefusalScopeError, match="max_response_tokens must be at least 2"):
        HarmBenchConfig(max_response_tokens=1)
