"""ChatModel on tiny random models of each supported family (CPU, no downloads)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.hf import find_decoder_layers, pick_device_dtype
from refusalscope.runtime.hooks import EMBED, Capture, Intervention, check_direction
from refusalscope.runtime.interventions import AblateDirection, AddDirection
from refusalscope.runtime.model import ChatModel
from tests.conftest import ARCHS, make_tiny_model

# Clearly different lengths, so left padding matters in every batch.
PROMPTS = [
    "hi",
    "how do I bake bread at home",
    "write a short poem about the sea and a dragon and a knight please",
    "fix it",
]


@pytest.fixture(scope="module", params=ARCHS)
def arch_model(request, chat_tokenizer) -> ChatModel:
    # Seed 0 (make_tiny_model's default): the smallest top-1/top-2 logit margin over
    # the greedy steps below is ~3e-4, far above float32 noise from padding (~1e-6).
    model = make_tiny_model(request.param, chat_tokenizer)
    return ChatModel(model, chat_tokenizer, name=f"tiny-{request.param}")


def _direction(d_model: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(d_model, generator=torch.Generator().manual_seed(seed))


def _all_sites(cm: ChatModel) -> list[int]:
    return [EMBED, *range(cm.n_layers)]


def _n_hooks(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def _orth_error(acts: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """|h·r̂| / |h| for every vector in ``acts[..., d_model]``."""
    r_hat = r / r.norm()
    return (acts.float() @ r_hat).abs() / acts.float().norm(dim=-1).clamp(min=1e-6)


# ------------------------------------------------------------------ 1. capture
def test_capture_equals_hf_hidden_states(arch_model: ChatModel):
    cm = arch_model
    sites = _all_sites(cm)
    # batch_size=2: rows of different batches are re-padded to one common length.
    acts = cm.capture(PROMPTS, sites, positions="all", batch_size=2)
    T = acts.tokens.input_ids.shape[1]
    assert acts.sites == sites
    assert acts.acts.shape == (len(PROMPTS), len(sites), T, cm.d_model)
    for i, prompt in enumerate(PROMPTS):
        single = cm.tokenize([prompt])
        n = single.input_ids.shape[1]
        # Left-padded layout: the prompt's own tokens at the end, zeros before.
        assert torch.equal(acts.tokens.input_ids[i, T - n :], single.input_ids[0])
        assert acts.tokens.attention_mask[i, : T - n].sum() == 0
        assert acts.tokens.attention_mask[i, T - n :].all()
        assert torch.equal(acts.tokens.prompt_mask[i, T - n :], single.prompt_mask[0])
        assert not acts.acts[i, :, : T - n].any()
        with torch.no_grad():
            hs = cm.hf(input_ids=single.input_ids, output_hidden_states=True).hidden_states
        assert len(hs) == cm.n_layers + 1
        for k, site in enumerate(sites):
            got = acts.acts[i, k, T - n :]
            if site == cm.n_layers - 1:
                # transformers 5 puts the final norm's output in the last entry.
                with torch.no_grad():
                    got = cm.hf.model.norm(got)
            torch.testing.assert_close(got, hs[site + 1][0], atol=1e-5, rtol=1e-4)


def test_capture_last_equals_last_of_all(tiny_chat_model: ChatModel):
    cm = tiny_chat_model
    last = cm.capture(PROMPTS, [EMBED, 1], positions="last", batch_size=3)
    full = cm.capture(PROMPTS, [EMBED, 1], positions="all", batch_size=3)
    assert last.acts.shape == (len(PROMPTS), 2, cm.d_model)
    torch.testing.assert_close(last.acts, full.acts[:, :, -1], atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------- 2. ablation
def test_ablation_makes_every_site_orthogonal(arch_model: ChatModel):
    cm = arch_model
    r = _direction(cm.d_model)
    sites = _all_sites(cm)
    base = cm.capture(PROMPTS, sites, positions="all")
    ablated = cm.capture(PROMPTS, sites, positions="all", interventions=[AblateDirection(r)])
    real = ablated.tokens.attention_mask.bool()[:, None, :].expand(-1, len(sites), -1)
    # Not vacuous: without the ablation the residuals have a clear component along r.
    assert _orth_error(base.acts, r)[real].max() > 0.1
    assert _orth_error(ablated.acts, r)[real].max() < 1e-5


# -------------------------------------------------------------- 3. generation
@pytest.mark.parametrize("ablate", [False, True], ids=["plain", "ablated"])
def test_batched_generation_equals_one_by_one(arch_model: ChatModel, ablate: bool):
    cm = arch_model
    ivs = [AblateDirection(_direction(cm.d_model))] if ablate else []
    batched = cm.generate(PROMPTS, ivs, max_new_tokens=10, desc=None)
    singles = [cm.generate([p], ivs, max_new_tokens=10, desc=None) for p in PROMPTS]
    assert batched.token_ids == [s.token_ids[0] for s in singles]
    assert batched.texts == [s.texts[0] for s in singles]
    assert all(len(ids) > 0 for ids in batched.token_ids)


def test_generation_stops_at_eos(tiny_chat_model: ChatModel):
    full = tiny_chat_model.generate(PROMPTS, max_new_tokens=10, desc=None).token_ids
    cm = copy.copy(tiny_chat_model)
    extra = full[1][3]  # a token the model does emit: treat it as a second EOS id
    cm.eos_ids = [*tiny_chat_model.eos_ids, extra]
    out = cm.generate(PROMPTS, max_new_tokens=10, desc=None).token_ids
    for f, o in zip(full, out, strict=True):
        stop = next((k for k, t in enumerate(f) if t == extra), len(f))
        assert o == f[:stop]
    assert len(out[1]) == 3
    assert out == [cm.generate([p], max_new_tokens=10, desc=None).token_ids[0] for p in PROMPTS]


def test_generation_is_greedy_whatever_the_checkpoint_config(chat_tokenizer):
    cm = ChatModel(make_tiny_model("qwen2", chat_tokenizer), chat_tokenizer)
    want = cm.generate(PROMPTS, max_new_tokens=10, desc=None).token_ids
    # What a checkpoint's generation_config.json may carry (Qwen2-Instruct ships the
    # first four); none of it may leak into greedy decoding.
    cfg = cm.hf.generation_config
    cfg.do_sample, cfg.temperature, cfg.top_k, cfg.repetition_penalty = True, 0.7, 20, 5.0
    cfg.no_repeat_ngram_size, cfg.min_new_tokens = 1, 10
    assert cm.generate(PROMPTS, max_new_tokens=10, desc=None).token_ids == want


# ------------------------------------------------------------------ 4. hooks
def test_hooks_removed_after_exception(tiny_chat_model: ChatModel):
    cm = tiny_chat_model
    before_hooks = _n_hooks(cm.hf)
    reference = cm.last_logits(PROMPTS)
    r = _direction(cm.d_model)
    with pytest.raises(RuntimeError, match="boom"), cm.hooked([AblateDirection(r), Capture([0])]):
        assert _n_hooks(cm.hf) > before_hooks
        raise RuntimeError("boom")
    assert _n_hooks(cm.hf) == before_hooks
    torch.testing.assert_close(cm.last_logits(PROMPTS), reference, atol=0, rtol=0)


def test_hooks_removed_after_exception_inside_forward(tiny_chat_model: ChatModel):
    class Explode(Capture):
        def edit(self, site, h, ctx):
            raise RuntimeError("boom in hook")

    cm = tiny_chat_model
    before_hooks = _n_hooks(cm.hf)
    with pytest.raises(RuntimeError, match="boom in hook"):
        cm.generate(PROMPTS, [Explode([1])], max_new_tokens=3, desc=None)
    assert _n_hooks(cm.hf) == before_hooks


# ----------------------------------------------------------------- 5. logits
def test_last_logits_equal_unpadded_forward(arch_model: ChatModel):
    cm = arch_model
    got = cm.last_logits(PROMPTS, batch_size=3)
    assert got.shape == (len(PROMPTS), cm.hf.config.vocab_size)
    assert got.dtype == torch.float32
    for i, prompt in enumerate(PROMPTS):
        ids = cm.tokenize([prompt]).input_ids
        with torch.no_grad():
            want = cm.hf(input_ids=ids).logits[0, -1].float()
        torch.testing.assert_close(got[i], want, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------ 6. prompt mask
def _check_layout(cm: ChatModel, instructions: list[str], preamble: str) -> None:
    """One BOS first, preamble masked, user text + template suffix in the mask."""
    tok = cm.tokenizer
    batch = cm.tokenize(instructions)
    suffix = cm.format("X").split("X", 1)[1]
    for i, text in enumerate(instructions):
        real = batch.attention_mask[i].bool()
        ids = batch.input_ids[i][real]
        mask = batch.prompt_mask[i][real]
        assert not batch.prompt_mask[i][~real].any()  # padding excluded
        assert ids[0] == tok.bos_token_id
        assert (ids == tok.bos_token_id).sum() == 1  # never a double BOS
        n_pre = int((~mask).sum())
        assert not mask[:n_pre].any() and mask[n_pre:].all()  # one contiguous tail
        assert tok.decode(ids[:n_pre]) == tok.bos_token + preamble
        assert tok.decode(ids[n_pre:]) == text + suffix


def test_prompt_mask_excludes_padding_bos_and_preamble(tiny_chat_model: ChatModel):
    cm = tiny_chat_model
    assert cm.format("hi") == "<|bos|><|user|>hi<|end|><|assistant|>"
    _check_layout(cm, PROMPTS, "<|user|>")
    acts = cm.capture(PROMPTS, [0], positions="all")
    T = acts.tokens.input_ids.shape[1]
    assert torch.equal(acts.tokens.prompt_mask, cm.tokenize(PROMPTS, pad_to=T).prompt_mask)


def test_prompt_mask_excludes_system_prompt(tiny_chat_model: ChatModel, chat_tokenizer):
    cm = ChatModel(tiny_chat_model.hf, chat_tokenizer, system_prompt="be kind")
    _check_layout(cm, PROMPTS, "<|system|>be kind<|end|><|user|>")


def _adding_bos(chat_tokenizer):
    """A copy whose ``tok(text)`` starts with BOS, as Llama's and Gemma's do.

    Through the post-processor: setting ``add_bos_token`` only works on some tokenizer
    classes before transformers 5.
    """
    from tokenizers import processors

    tok = copy.deepcopy(chat_tokenizer)
    bos, bos_id = tok.bos_token, tok.bos_token_id
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)]
    )
    return tok


def test_no_double_bos_when_tokenizer_and_template_both_add_it(
    tiny_chat_model: ChatModel, chat_tokenizer
):
    tok = _adding_bos(chat_tokenizer)
    assert tok("x")["input_ids"][0] == tok.bos_token_id  # precondition
    cm = ChatModel(tiny_chat_model.hf, tok)
    assert cm.format("x").startswith(tok.bos_token)
    _check_layout(cm, PROMPTS, "<|user|>")


def test_one_bos_when_only_tokenizer_adds_it(tiny_chat_model: ChatModel, chat_tokenizer):
    tok = _adding_bos(chat_tokenizer)
    tok.chat_template = chat_tokenizer.chat_template.replace("{{ bos_token }}", "")
    cm = ChatModel(tiny_chat_model.hf, tok)
    assert not cm.format("x").startswith(tok.bos_token)  # precondition
    _check_layout(cm, PROMPTS, "<|user|>")


# ---------------------------------------------------------- 7. load from disk
def test_load_from_local_folder(tmp_path, monkeypatch, caplog, tiny_chat_model, chat_tokenizer):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_chat_model.hf.save_pretrained(tmp_path)
    chat_tokenizer.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="refusalscope.runtime.model"):
        cm = ChatModel.load(str(tmp_path), device="cpu", dtype="float32")
    assert "on cpu in torch.float32" in caplog.text
    assert (cm.n_layers, cm.d_model) == (tiny_chat_model.n_layers, tiny_chat_model.d_model)
    assert cm.device == torch.device("cpu") and cm.dtype == torch.float32
    assert cm.tokenizer.chat_template == chat_tokenizer.chat_template
    want = tiny_chat_model.generate(PROMPTS[:2], max_new_tokens=8, desc=None)
    assert cm.generate(PROMPTS[:2], max_new_tokens=8, desc=None) == want

    half = ChatModel.load(str(tmp_path), device="cpu", dtype="bfloat16")
    assert half.dtype == torch.bfloat16
    assert next(half.hf.parameters()).dtype == torch.bfloat16


def test_device_dtype_decided_once_and_logged(caplog):
    with caplog.at_level(logging.INFO, logger="refusalscope.runtime.hf"):
        dev, dt = pick_device_dtype(None, None)
    if torch.cuda.is_available():
        assert dev.type == "cuda"
    else:
        assert (dev, dt) == (torch.device("cpu"), torch.float32)
    assert "device=" in caplog.text and "dtype=" in caplog.text
    assert pick_device_dtype("cpu", "float16") == (torch.device("cpu"), torch.float16)


# --------------------------------------------------------------- 8. bad input
def test_unknown_local_path():
    with pytest.raises(RefusalScopeError, match="does not exist"):
        ChatModel.load("./no/such/folder")


def test_unknown_dtype():
    with pytest.raises(RefusalScopeError, match="unknown dtype"):
        pick_device_dtype("cpu", "float7")


def test_layer_out_of_range(tiny_chat_model: ChatModel):
    with pytest.raises(RefusalScopeError, match="out of range"):
        tiny_chat_model.capture(PROMPTS, sites=[99])
    with pytest.raises(RefusalScopeError, match="out of range"):
        tiny_chat_model.capture(PROMPTS, sites=[-2])
    r = _direction(tiny_chat_model.d_model)
    with pytest.raises(RefusalScopeError, match="out of range"):
        tiny_chat_model.generate(PROMPTS, [AddDirection(r, layer=99)], max_new_tokens=2)


def test_tokenizer_without_chat_template(tiny_chat_model: ChatModel, chat_tokenizer):
    tok = copy.deepcopy(chat_tokenizer)
    tok.chat_template = None
    with pytest.raises(RefusalScopeError, match="no chat template"):
        ChatModel(tiny_chat_model.hf, tok)


@pytest.mark.parametrize("call", ["capture", "generate", "last_logits"])
@pytest.mark.parametrize(
    ("prompts", "phrase"), [([], "empty prompt list"), ("hi", "got one string")]
)
def test_bad_prompt_list(tiny_chat_model: ChatModel, call: str, prompts, phrase: str):
    cm = tiny_chat_model
    run = {
        "capture": lambda: cm.capture(prompts, [0]),
        "generate": lambda: cm.generate(prompts, max_new_tokens=2),
        "last_logits": lambda: cm.last_logits(prompts),
    }[call]
    with pytest.raises(RefusalScopeError, match=phrase):
        run()


def test_direction_of_wrong_size(tiny_chat_model: ChatModel):
    cm = tiny_chat_model
    wrong = torch.ones(cm.d_model + 1)
    with pytest.raises(RefusalScopeError, match="d_model=64"):
        check_direction(wrong, cm.d_model)
    with pytest.raises(RefusalScopeError, match="d_model=64"):
        check_direction(torch.ones(2, cm.d_model), cm.d_model)
    bad = [AblateDirection(wrong), AddDirection(wrong, layer=0)]
    for iv in bad:
        with pytest.raises(RefusalScopeError, match="d_model=64"):
            cm.generate(PROMPTS, [iv], max_new_tokens=2)
        with pytest.raises(RefusalScopeError, match="d_model=64"):
            cm.capture(PROMPTS, [0], interventions=[iv])
        with pytest.raises(RefusalScopeError, match="d_model=64"):
            cm.last_logits(PROMPTS, [iv])
    assert _n_hooks(cm.hf) == 0


# ------------------------------------------------------ 9. unknown architecture
class _NoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(num_hidden_layers=3)
        self.blocks = nn.Sequential(*(nn.Linear(4, 4) for _ in range(3)))


def test_unknown_architecture(chat_tokenizer):
    for build in (
        lambda: find_decoder_layers(_NoLayers()),
        lambda: ChatModel(_NoLayers(), chat_tokenizer),
    ):
        with pytest.raises(RefusalScopeError, match=r"_NoLayers.*model\.layers.*transformer\.h"):
            build()


# ------------------------------------------- 10. prompt-only vs every position
@pytest.mark.parametrize("positions", ["prompt", "all"])
def test_positions_prompt_skips_decode_steps(arch_model: ChatModel, positions: str):
    cm = arch_model
    r = _direction(cm.d_model)
    cap, phases = Capture([0]), _Phases()
    ivs = [AblateDirection(r, positions=positions), cap, phases]
    out = cm.generate(PROMPTS, ivs, max_new_tokens=4, desc=None)
    calls = cap.store[0]
    assert len(calls) == max(len(ids) for ids in out.token_ids) == 4  # prefill + 3 decode
    assert phases.prefill == [True, False, False, False]
    prefill, decode = calls[0], torch.cat(calls[1:], dim=1)
    assert prefill.shape[1] > 1 and decode.shape[1] == 3
    assert _orth_error(prefill, r).max() < 1e-5  # padding included: ablated too
    if positions == "all":
        assert _orth_error(decode, r).max() < 1e-5
    else:  # untouched: off the ablated subspace (one position may be near it by chance)
        assert _orth_error(decode, r).median() > 1e-3


@dataclasses.dataclass(eq=False)
class _Phases(Intervention):
    """Records, per forward call, whether the hooks saw a prefill."""

    prefill: list = dataclasses.field(default_factory=list)

    def sites(self, n_layers: int) -> set[int]:
        return {0}

    def edit(self, site, h, ctx):
        self.prefill.append(ctx.prefill)


# ------------------------------------------------------------- performance
def test_generate_speed_note(tiny_chat_model: ChatModel, record_property):
    """Not a benchmark: records the time of 16 prompts x 16 tokens (see -rA / junit)."""
    prompts = [f"{PROMPTS[i % 4]} {i}" for i in range(16)]
    start = time.perf_counter()
    out = tiny_chat_model.generate(prompts, max_new_tokens=16, desc=None)
    seconds = time.perf_counter() - start
    record_property("generate_16x16_s", round(seconds, 3))
    print(f"generate 16 prompts x 16 tokens: {seconds:.3f} s")
    assert len(out.token_ids) == 16 and all(len(ids) <= 16 for ids in out.token_ids)
