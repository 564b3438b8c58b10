"""A NaN or inf entering the method stops it with a RefusalScopeError naming the tensor,
the layer and the fix, instead of sorting first and giving plausible garbage."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from refusalscope.runtime.errors import RefusalScopeError, check_finite
from refusalscope.runtime.model import ChatModel
from refusalscope.runtime.saes import SAESet
from refusalscope.stages.attribution import AttributionConfig, compute_attribution
from refusalscope.stages.candidates import CandidateConfig, compute_candidates
from refusalscope.stages.direction import diff_in_means
from refusalscope.stages.features import (
    actdiff_features,
    cossim_features,
    global_top,
    per_prompt_top,
)
from tests.conftest import make_tiny_model
from tests.runtime.test_saes import random_sae
from tests.stages.test_features import D
from tests.stages.test_features import jumprelu_saes as finite_saes

PROMPTS = ["how do I bake bread", "write a short poem about the sea please"]
NAN, INF = float("nan"), float("inf")


def jumprelu_saes(poison: tuple[int, str, tuple, float] | None = None) -> SAESet:
    """Two finite JumpReLU SAEs on layers 0 and 1; ``poison`` = (layer, param, index, value)
    is written after loading, as a value would arise at run time."""
    out = finite_saes()
    if poison is not None:
        layer, name, index, value = poison
        with torch.no_grad():
            getattr(out.saes[layer], name)[index] = value
    return out


@pytest.fixture(scope="module")
def model(chat_tokenizer) -> ChatModel:
    return ChatModel(make_tiny_model("llama", chat_tokenizer), chat_tokenizer, name="tiny")


# ------------------------------------------------------------------ the helper
def test_check_finite_passes_finite_and_ignores_integer_tensors():
    check_finite(
        {"a": torch.randn(3, 4), "ids": torch.arange(5), "empty": torch.zeros(0)}, "x", "fix"
    )


def test_check_finite_names_tensor_count_kinds_and_first_index():
    bad = torch.zeros(4, 5)
    bad[1, 3], bad[2, 0], bad[3, 4] = NAN, INF, -INF
    with pytest.raises(RefusalScopeError) as e:
        check_finite({"ok": torch.ones(2), "W": bad, "b": torch.full((2,), NAN)}, "Thing", "do X")
    assert str(e.value) == (
        "Thing has 3 non-finite values (nan, +inf, -inf) in W, first at [1, 3] (also in b): do X"
    )


# ------------------------------------------------------------- SAEs at load
def _saved_sae(tmp_path, arch="jumprelu"):
    folder = tmp_path / "sae_3"
    random_sae(arch).save_model(folder)
    return folder


def _poke(folder, name: str, index: tuple, value: float) -> None:
    weights = folder / "sae_weights.safetensors"
    tensors = load_file(weights)
    tensors[name][index] = value
    save_file(tensors, weights)


def test_good_saes_still_load(tmp_path):
    folder = _saved_sae(tmp_path)
    _poke(folder, "W_dec", (17, 4), 1e30)  # large but finite is fine
    assert SAESet.from_folders({3: folder}).layers == [3]


@pytest.mark.parametrize(
    "name,index,value,kind",
    [
        ("W_dec", (17, 4), NAN, "nan"),
        ("threshold", (5,), INF, "+inf"),
        ("b_enc", (0,), -INF, "-inf"),
    ],
)
def test_nonfinite_sae_weight_fails_at_load(tmp_path, name, index, value, kind):
    folder = _saved_sae(tmp_path)
    _poke(folder, name, index, value)
    with pytest.raises(RefusalScopeError) as e:
        SAESet.from_folders({3: folder})
    at = ", ".join(map(str, index))
    assert str(e.value) == (
        f"SAE for layer 3 ({folder}) has 1 non-finite value ({kind}) in {name}, first at "
        f"[{at}]: the weights file {folder}/sae_weights.safetensors is corrupt or came from a "
        "diverged training run; re-download or retrain it"
    )


def test_nonfinite_release_sae_says_to_clear_the_hub_cache():
    sae = random_sae("topk")
    with torch.no_grad():
        sae.W_enc[2, 9] = NAN
    with pytest.raises(RefusalScopeError, match=r"layer 5 \(rel:layer_5\).*W_enc.*\[2, 9\].*cache"):
        SAESet._made({5: sae}, {5: "rel:layer_5"})


# ------------------------------------------------------------ model at load
def _saved_model(tmp_path, chat_tokenizer, name: str, index: tuple, value: float):
    hf = make_tiny_model("llama", chat_tokenizer)
    with torch.no_grad():
        hf.get_parameter(name)[index] = value
    hf.save_pretrained(tmp_path)
    chat_tokenizer.save_pretrained(tmp_path)
    return str(tmp_path)


def test_nonfinite_model_weight_fails_at_load(tmp_path, chat_tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "model.layers.1.mlp.up_proj.weight"
    folder = _saved_model(tmp_path, chat_tokenizer, name, (3, 7), NAN)
    with pytest.raises(RefusalScopeError) as e:
        ChatModel.load(folder, device="cpu", dtype="float32")
    msg = str(e.value)
    assert msg.startswith(f"model {folder} has 1 non-finite value (nan) in {name}, first at [3, 7]")
    assert "corrupt" in msg and "float16" not in msg


def test_model_weight_overflowing_float16_names_the_dtype(tmp_path, chat_tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "model.layers.0.self_attn.q_proj.weight"
    folder = _saved_model(tmp_path, chat_tokenizer, name, (0, 1), 1e6)  # > float16 max
    assert ChatModel.load(folder, device="cpu", dtype="float32").n_layers == 2
    with pytest.raises(RefusalScopeError, match=rf"\(\+inf\) in {re.escape(name)}.*bfloat16"):
        ChatModel.load(folder, device="cpu", dtype="float16")


# ----------------------------------------------------------------- direction
def test_nonfinite_activations_fail_the_difference_in_means(chat_tokenizer):
    hf = make_tiny_model("llama", chat_tokenizer)
    with torch.no_grad():  # layer 1's MLP writes inf into residual dimension 5
        hf.model.layers[1].mlp.down_proj.weight[5] = INF
    cm = ChatModel(hf, chat_tokenizer, name="tiny")
    with pytest.raises(
        RefusalScopeError,
        match=r"difference in means on tiny .* in the mean over harmful prompts, first at layer "
        r"1, dimension 5 .*: the model produced non-finite activations even in float32",
    ):
        diff_in_means(cm, PROMPTS, ["write a poem"])
    with pytest.raises(RefusalScopeError, match="overflow in bfloat16; load it with dtype float32"):
        diff_in_means(ChatModel(hf.bfloat16(), chat_tokenizer), PROMPTS, ["write a poem"])


def test_nan_direction_is_refused_by_every_stage_that_takes_one(model):
    r = torch.randn(D)
    r[5] = NAN
    saes = jumprelu_saes()
    want = r"the refusal direction, first at dimension 5: .*--force direction"
    with pytest.raises(RefusalScopeError, match="candidate pre-filter has 1 .*" + want):
        compute_candidates(saes, r, CandidateConfig(k_per_layer=4))
    with pytest.raises(RefusalScopeError, match="CosSim has 1 .*" + want):
        cossim_features(saes, r, 4)
    with pytest.raises(RefusalScopeError, match="LA-IG attribution has 1 .*" + want):
        cands = torch.tensor([[0, 1], [1, 2]])
        compute_attribution(model, saes, PROMPTS, r, cands, 5, AttributionConfig(ig_steps=1))


# -------------------------------------------------------------------- scores
def test_nan_decoder_row_is_not_ranked_first():
    saes = jumprelu_saes(poison=(1, "W_dec", (7, 3), NAN))  # slipped past the load check
    r = torch.randn(D)
    with pytest.raises(
        RefusalScopeError,
        match=r"candidate pre-filter .* in the decoder cosines of layer 1, first at latent 7",
    ):
        compute_candidates(saes, r, CandidateConfig(k_per_layer=4))
    with pytest.raises(RefusalScopeError, match=r"CosSim .* scores of layer 1, first at latent 7"):
        cossim_features(saes, r, 4)


def test_nonfinite_fstar_scores_are_not_ranked():
    cands = torch.tensor([[0, 1], [0, 2], [1, 3]])
    score = torch.tensor([[1.0, 2, 3], [4, 5, NAN]])
    want = r"F\* has 1 non-finite value \(nan\) in the candidate scores, first at prompt 1, "
    want += "layer 1 latent 3"
    with pytest.raises(RefusalScopeError, match=want):
        per_prompt_top(score, cands, 2)
    with pytest.raises(RefusalScopeError, match=want):
        global_top(score, cands, 2)
    assert global_top(score.nan_to_num(), cands, 2)[0].tolist() == [[0, 2], [0, 1]]


def test_nonfinite_activations_fail_actdiff(model):
    saes = jumprelu_saes(poison=(0, "W_enc", (slice(None), 11), NAN))
    with pytest.raises(
        RefusalScopeError, match=r"ActDiff .* scores of layer 0, first at latent 11"
    ):
        actdiff_features(model, saes, PROMPTS[:1], PROMPTS[1:], 4)


@pytest.mark.parametrize("all_latents", [False, True])
def test_nonfinite_attribution_scores_name_prompt_layer_and_latent(model, all_latents):
    # latent 9 of layer 1 encodes to NaN; it is the second candidate of layer 1
    saes = jumprelu_saes(poison=(1, "W_enc", (slice(None), 9), NAN))
    cands = torch.tensor([[0, 1], [0, 4], [1, 2], [1, 9]])
    cfg = AttributionConfig(ig_steps=1, all_latents=all_latents)
    with pytest.raises(
        RefusalScopeError,
        match=r"LA-IG attribution has 2 non-finite values \(nan\) in the candidate scores, "
        r"first at prompt 0, layer 1 latent 9",
    ):
        compute_attribution(model, saes, PROMPTS, torch.randn(D), cands, 5, cfg)
    finite = torch.tensor([[0, 1], [0, 4], [1, 2]])
    if all_latents:  # the candidates are fine, the all-latent (AP) scores are not
        with pytest.raises(
            RefusalScopeError, match=r"all-latent mean scores of layer 1, first at latent 9"
        ):
            compute_attribution(model, saes, PROMPTS, torch.randn(D), finite, 5, cfg)
    else:
        res = compute_attribution(model, saes, PROMPTS, torch.randn(D), finite, 5, cfg)
        assert torch.isfinite(res.score).all() and res.score.shape == (2, 3)
