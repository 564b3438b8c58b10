"""Abliteration: the orthogonalised weights against hook-based directional ablation."""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch

from refusalscope.export.abliterate import (
    WRITERS,
    ResidualWriters,
    orthogonalize,
    writers_for,
)
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.hooks import Capture
from refusalscope.runtime.interventions import AblateDirection
from refusalscope.runtime.model import ChatModel
from tests.conftest import ARCHS, make_tiny_model

PROMPTS = [
    "how do I bake bread at home",
    "write a short poem about the sea",
    "tell me a story about a dragon",
    "explain how to fix a bicycle chain",
]
D_MODEL = 64

# The norm that reads the residual stream between attention and MLP ("resid_mid").
_MLP_INPUT_NORM = {
    "llama": "post_attention_layernorm",
    "qwen2": "post_attention_layernorm",
    "mistral": "post_attention_layernorm",
    "gemma2": "pre_feedforward_layernorm",
}


def direction(seed: int = 0) -> torch.Tensor:
    return torch.randn(D_MODEL, generator=torch.Generator().manual_seed(seed))


def perturb(hf, seed: int = 1) -> None:
    """Random norm scales and biases: the default init (all ones, zeros) would hide a
    wrong post-norm scale, an unprojected bias or a projected unembedding."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(("norm.weight", "bias")):
                p.add_(0.3 * torch.randn(p.shape, generator=g))


def make_extra(arch: str, tokenizer):
    """Families beyond conftest's four, and Llama with biases or tied embeddings."""
    import transformers as tf

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=D_MODEL,
        intermediate_size=2 * D_MODEL,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    head = {"head_dim": D_MODEL // 4}
    families = {
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, head),
        "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM, head),
        "gemma3_text": (
            tf.Gemma3TextConfig,
            tf.Gemma3ForCausalLM,
            {**head, "query_pre_attn_scalar": 16, "sliding_window": 64},
        ),
        "olmo2": (tf.Olmo2Config, tf.Olmo2ForCausalLM, {}),
        "llama-bias": (
            tf.LlamaConfig,
            tf.LlamaForCausalLM,
            {"attention_bias": True, "mlp_bias": True},
        ),
        "llama-tied": (tf.LlamaConfig, tf.LlamaForCausalLM, {"tie_word_embeddings": True}),
        "gemma2-tied": (
            tf.Gemma2Config,
            tf.Gemma2ForCausalLM,
            {
                **head,
                "query_pre_attn_scalar": 16,
                "sliding_window": 64,
                "tie_word_embeddings": True,
            },
        ),
    }
    cfg_cls, model_cls, extra = families[arch]
    torch.manual_seed(0)
    return model_cls(cfg_cls(**{**common, **extra})).eval()


def build(arch: str, tokenizer):
    hf = make_tiny_model(arch, tokenizer) if arch in ARCHS else make_extra(arch, tokenizer)
    perturb(hf)
    return hf


def abliterated(hf, r: torch.Tensor):
    out = copy.deepcopy(hf)
    orthogonalize(out, r)
    return out


@torch.no_grad()
def residuals(model: ChatModel) -> list[torch.Tensor]:
    """The residual stream entering every layer and leaving the last one.

    ``hidden_states`` holds the embedding output and every layer's output but the last,
    which it reports after the final norm; that one is captured by a hook instead.
    """
    tokens = model.tokenize(PROMPTS)
    cap = Capture([model.n_layers - 1])
    with model.hooked([cap]):
        out = model.hf(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            output_hidden_states=True,
        )
    return [*out.hidden_states[:-1], cap.get(model.n_layers - 1)]


def max_along(hs: list[torch.Tensor], r: torch.Tensor) -> float:
    """The largest ``|h·r̂| / |h|`` over layers, prompts and positions."""
    r_hat = r / r.norm()
    return max(float(((h @ r_hat).abs() / h.norm(dim=-1).clamp(min=1e-12)).max()) for h in hs)


@contextmanager
def resid_mid_ablated(model: ChatModel, arch: str, r: torch.Tensor):
    """Also ablate between attention and MLP, as andyrdt/refusal_direction does
    (pipeline/utils/hook_utils.py, get_all_direction_ablation_hooks, ablates the block
    input and the attention and MLP outputs); ``AblateDirection`` does not."""
    r_hat = r / r.norm()

    def pre(_mod, args):
        h = args[0]
        return (h - (h @ r_hat.to(h.dtype)).unsqueeze(-1) * r_hat.to(h.dtype), *args[1:])

    handles = [
        getattr(layer, _MLP_INPUT_NORM[arch]).register_forward_pre_hook(pre)
        for layer in model.layers
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = list(zip(a, b, strict=True))
    same = sum(x == y for s, t in pairs for x, y in zip(s, t, strict=False))
    return same / sum(max(len(s), len(t)) for s, t in pairs)


def save_and_load(hf, tokenizer, path) -> ChatModel:
    hf.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return ChatModel.load(str(path), device="cpu", dtype="float32")


# ------------------------------------------------------------------ orthogonality
@pytest.mark.parametrize(
    "arch",
    ["llama", "gemma2", "qwen2", "mistral", "qwen3", "gemma", "gemma3_text", "olmo2", "llama-bias"],
)
def test_the_residual_stream_is_orthogonal_to_r_at_every_layer(arch, chat_tokenizer):
    hf, r = build(arch, chat_tokenizer), direction()
    before = residuals(ChatModel(hf, chat_tokenizer))
    after = residuals(ChatModel(abliterated(hf, r), chat_tokenizer))
    assert max_along(before, r) > 0.1  # the original writes along r
    assert max_along(after, r) < 1e-5


def test_only_the_residual_writers_change(chat_tokenizer):
    hf = build("llama-bias", chat_tokenizer)
    after = abliterated(hf, direction())
    old, new = hf.state_dict(), after.state_dict()
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    writers = {"self_attn.o_proj.weight", "self_attn.o_proj.bias"}
    writers |= {"mlp.down_proj.weight", "mlp.down_proj.bias"}
    expected = {"model.embed_tokens.weight"}
    expected |= {f"model.layers.{i}.{w}" for i in range(2) for w in writers}
    assert changed == expected


def test_unknown_architectures_and_bad_directions_are_refused(chat_tokenizer):
    hf = build("llama", chat_tokenizer)
    with pytest.raises(RefusalScopeError, match="d_model=64"):
        orthogonalize(hf, torch.ones(32))
    with pytest.raises(RefusalScopeError, match="has norm 0.0"):
        orthogonalize(hf, torch.zeros(D_MODEL))
    hf.config.model_type = "mixtral"
    with pytest.raises(RefusalScopeError, match="known: llama"):
        orthogonalize(hf, direction())


# ------------------------------------------------- equality with hook ablation
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
@torch.no_grad()
def test_the_export_generates_like_direction_ablation(arch, chat_tokenizer, tmp_path):
    hf, r = build(arch, chat_tokenizer), direction()
    exported = save_and_load(abliterated(hf, r), chat_tokenizer, tmp_path / arch)
    base = ChatModel(hf, chat_tokenizer)
    ablate = [AblateDirection(r, resid_mid=True)]  # at every layer, resid_mid included
    tokens = base.tokenize(PROMPTS)
    want = base.generate(PROMPTS, ablate, max_new_tokens=16)
    want_logits = base.forward(tokens, ablate)
    got = exported.generate(PROMPTS, max_new_tokens=16)
    assert got.token_ids == want.token_ids
    torch.testing.assert_close(exported.forward(tokens), want_logits, atol=1e-5, rtol=1e-5)
    assert got.token_ids != base.generate(PROMPTS, max_new_tokens=16).token_ids
    # without resid_mid each MLP reads its own layer's attention write along r:
    # close, but not the same model
    hooked_only = base.forward(tokens, [AblateDirection(r)])
    assert float((hooked_only - want_logits).abs().max()) > 1e-4


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gemma2"])
@torch.no_grad()
def test_resid_mid_ablation_equals_ablating_the_mlp_input(arch, chat_tokenizer):
    """AblateDirection(resid_mid=True) edits each attention write; an independent hook
    on the norm that reads resid_mid must give the same model."""
    hf, r = build(arch, chat_tokenizer), direction()  # norm scales and biases randomised
    base = ChatModel(hf, chat_tokenizer)
    tokens = base.tokenize(PROMPTS)
    got = base.forward(tokens, [AblateDirection(r, resid_mid=True)])
    with resid_mid_ablated(base, arch, r):
        want = base.forward(tokens, [AblateDirection(r)])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with resid_mid_ablated(base, arch, r):
        want_gen = base.generate(PROMPTS, [AblateDirection(r)], max_new_tokens=8)
    got_gen = base.generate(PROMPTS, [AblateDirection(r, resid_mid=True)], max_new_tokens=8)
    assert got_gen.token_ids == want_gen.token_ids  # with the KV cache too


@torch.no_grad()
def test_tied_embeddings_are_untied_and_the_unembedding_kept(chat_tokenizer, tmp_path):
    hf, r = build("llama-tied", chat_tokenizer), direction()
    assert hf.lm_head.weight is hf.model.embed_tokens.weight
    original = hf.model.embed_tokens.weight.detach().clone()
    exported = save_and_load(abliterated(hf, r), chat_tokenizer, tmp_path / "tied")
    assert exported.hf.config.tie_word_embeddings is False
    torch.testing.assert_close(exported.hf.lm_head.weight, original)
    emb = exported.hf.model.embed_tokens.weight
    assert float((emb @ (r / r.norm())).abs().max()) < 1e-6
    base = ChatModel(hf, chat_tokenizer)
    with resid_mid_ablated(base, "llama", r):
        want = base.generate(PROMPTS, [AblateDirection(r)], max_new_tokens=16)
    assert exported.generate(PROMPTS, max_new_tokens=16).token_ids == want.token_ids


@torch.no_grad()
def test_a_tied_gemma2_reloads_as_exported(chat_tokenizer, tmp_path):
    hf, r = build("gemma2-tied", chat_tokenizer), direction()
    original = hf.lm_head.weight.detach().clone()
    in_memory = ChatModel(abliterated(hf, r), chat_tokenizer)
    reloaded = save_and_load(in_memory.hf, chat_tokenizer, tmp_path / "gemma2")
    torch.testing.assert_close(reloaded.hf.lm_head.weight, original)
    assert max_along(residuals(reloaded), r) < 1e-5
    tokens = in_memory.tokenize(PROMPTS)
    torch.testing.assert_close(reloaded.forward(tokens), in_memory.forward(tokens))


# ------------------------------------------------------ post-sublayer norms
@torch.no_grad()
def test_gemma2_writes_are_parallel_to_the_ablated_ones_but_rescaled(chat_tokenizer):
    """Layer 0 gets the same input in both models; its attention block writes ``c · P y``
    with ``c > 0`` per token where hook ablation writes ``P y``."""
    hf, r = build("gemma2", chat_tokenizer), direction()
    r_hat = r / r.norm()
    base, exported = ChatModel(hf, chat_tokenizer), ChatModel(abliterated(hf, r), chat_tokenizer)
    tokens = base.tokenize(PROMPTS)
    writes = {}
    for name, model, ivs in (
        ("hook", base, [AblateDirection(r, at=[-1])]),
        ("export", exported, []),
    ):
        norm = model.layers[0].post_attention_layernorm
        handle = norm.register_forward_hook(lambda _m, _a, out, n=name: writes.__setitem__(n, out))
        try:
            model.forward(tokens, ivs)
        finally:
            handle.remove()
    y = writes["hook"].detach()
    ablated = y - (y @ r_hat).unsqueeze(-1) * r_hat
    got = writes["export"].detach()
    cos = torch.nn.functional.cosine_similarity(got, ablated, dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos), atol=1e-5, rtol=0)
    ratio = got.norm(dim=-1) / ablated.norm(dim=-1)
    assert float((ratio - 1).abs().max()) > 1e-3  # the RMS norm rescales: not equal


@torch.no_grad()
def test_gemma2_diverges_from_hook_ablation_and_the_gap_is_measured(chat_tokenizer, capsys):
    hf, r = build("gemma2", chat_tokenizer), direction()
    base, exported = ChatModel(hf, chat_tokenizer), ChatModel(abliterated(hf, r), chat_tokenizer)
    assert max_along(residuals(exported), r) < 1e-5  # what is exact
    tokens = base.tokenize(PROMPTS)
    ablate = [AblateDirection(r)]
    plain = base.generate(PROMPTS, ablate, max_new_tokens=16)
    with resid_mid_ablated(base, "gemma2", r):
        full = base.generate(PROMPTS, ablate, max_new_tokens=16)
        full_logits = base.forward(tokens, ablate)
    got = exported.generate(PROMPTS, max_new_tokens=16)
    gap = float((exported.forward(tokens) - full_logits).abs().max())
    assert gap > 1e-3  # not equal, unlike the pre-norm families (1e-5 there)
    with capsys.disabled():
        print(
            f"\ngemma2 export vs hook ablation: max logit gap {gap:.3g}; token agreement "
            f"{agreement(got.token_ids, full.token_ids):.3f} (full ablation), "
            f"{agreement(got.token_ids, plain.token_ids):.3f} (AblateDirection)"
        )


def test_without_the_post_norm_scale_gemma2_would_write_along_r(chat_tokenizer, monkeypatch):
    hf, r = build("gemma2", chat_tokenizer), direction()
    assert writers_for(hf).post_norms
    monkeypatch.setitem(WRITERS, "gemma2", ResidualWriters())  # plain P, as if pre-norm
    naive = ChatModel(abliterated(hf, r), chat_tokenizer)
    assert max_along(residuals(naive), r) > 1e-2


def test_post_norm_coordinates_scaled_to_zero_are_handled(chat_tokenizer):
    """Gemma's ``1 + w`` can be 0: those coordinates are never written, so the projection
    uses the pseudo-inverse there and still leaves no component along r."""
    hf, r = build("gemma2", chat_tokenizer), direction()
    with torch.no_grad():
        for layer in hf.model.layers:
            for norm in (layer.post_attention_layernorm, layer.post_feedforward_layernorm):
                norm.weight[:8] = -1.0
    assert max_along(residuals(ChatModel(abliterated(hf, r), chat_tokenizer)), r) < 1e-5
