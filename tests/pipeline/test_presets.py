"""Presets: every one against the installed sae_lens registry, the architecture facts
against TransformerLens's own copies, the parameter count against real (tiny)
transformers models, sizes, errors, and the run config against ``RunConfig``."""

from __future__ import annotations

import json
import re

import pytest
import torch

from refusalscope.pipeline import presets
from refusalscope.pipeline.config import RunConfig
from refusalscope.pipeline.presets import (
    PRESET_KEY,
    count_parameters,
    describe_preset,
    get_preset,
    model_facts,
    preset_names,
    preset_run_config,
    resolve_preset,
    sae_width_from_id,
    width_latents,
)
from refusalscope.runtime.config import from_dict
from refusalscope.runtime.errors import RefusalScopeError

NAMES = preset_names()


@pytest.fixture(scope="module")
def registry():
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


@pytest.fixture(scope="module")
def resolved():
    return {name: resolve_preset(name) for name in NAMES}


def test_the_required_presets_exist():
    required = {"gemma-2-2b-it", "gemma-2-2b-it-65k", "llama-3.1-8b-instruct", "gemma-2-9b-it"}
    required |= {f"gemma-3-{s}-it" for s in ("270m", "1b", "4b", "12b", "27b")}
    assert required <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_preset_matches_the_registry(name, registry, resolved):
    r, p = resolved[name], get_preset(name)
    entry = registry[p.release]
    text = model_facts(p.model)["text"]
    # The layers, found here by formatting the template for every possible layer (not
    # by the module's regex): all of them, or those the release has.
    template = p.sae_id.replace("{width}", p.width).replace("{variant}", p.variant)
    have = [x for x in range(200) if template.replace("{layer}", str(x)) in entry.saes_map]
    want = list(range(text["num_hidden_layers"])) if p.layers == "all" else have
    assert list(r.ids) == want and want
    assert r.repo_id == entry.repo_id
    for s in r.saes:
        assert s.sae_id == template.replace("{layer}", str(s.layer))
        assert s.path == entry.saes_map[s.sae_id]
        assert 0 <= s.layer < text["num_hidden_layers"]
        assert s.d_in == text["hidden_size"]
        assert s.d_sae == width_latents(p.width)
        assert s.neuronpedia_id == (entry.neuronpedia_id or {}).get(s.sae_id)
        if s.neuronpedia_id:  # Neuronpedia ids end in the width: an independent d_sae
            assert width_latents(re.search(r"-(\d+[km])$", s.neuronpedia_id)[1]) == s.d_sae


def test_ids_follow_each_release_pattern(resolved):
    assert resolved["gemma-2-2b-it"].ids == {x: f"layer_{x}/width_16k/canonical" for x in range(26)}
    assert resolved["gemma-2-2b-it-65k"].ids[15] == "layer_15/width_65k/canonical"
    assert resolved["gemma-2-2b-it-65k"].saes[15].path == "layer_15/width_65k/average_l0_127"
    assert resolved["llama-3.1-8b-instruct"].ids == {x: f"l{x}r_8x" for x in range(32)}
    assert list(resolved["gemma-2-9b-it"].ids) == [9, 20, 31]
    assert list(resolved["gemma-3-1b-it-65k"].ids) == [7, 13, 17, 22]
    assert resolved["gemma-3-27b-it"].ids[61] == "layer_61_width_16k_l0_big"
    # canonical GemmaScope L0s come from the folder name (the registry stores 0.0)
    assert resolved["gemma-2-2b-it-65k"].saes[15].l0 == 127.0
    assert resolved["llama-3.1-8b-instruct"].saes[0].d_sae == 8 * 4096


def test_gemma_scope_d_in_is_checked_against_sae_lens(monkeypatch):
    text = presets._package_data()["models"]["google/gemma-2-2b-it"]["text"]
    monkeypatch.setitem(text, "hidden_size", 2048)  # a wrong fact; sae_lens knows 2304
    with pytest.raises(RefusalScopeError, match=r"sae_lens says .*2304"):
        resolve_preset("gemma-2-2b-it")


# Facts TransformerLens keeps for the same checkpoints (loading_from_pretrained.py),
# read offline: an independent copy of each published config.json.
_TL_KEYS = {
    "d_model": "hidden_size",
    "n_layers": "num_hidden_layers",
    "d_mlp": "intermediate_size",
    "n_heads": "num_attention_heads",
    "n_key_value_heads": "num_key_value_heads",
    "d_head": "head_dim",
    "d_vocab": "vocab_size",
}


@pytest.mark.parametrize("model_id", sorted({get_preset(n).model for n in NAMES}))
def test_model_facts_match_transformer_lens(model_id, monkeypatch):
    from transformer_lens.loading_from_pretrained import convert_hf_model_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tl = convert_hf_model_config(model_id)
    facts = model_facts(model_id)
    assert {k: facts["text"][v] for k, v in _TL_KEYS.items()} == {k: tl[k] for k in _TL_KEYS}
    assert facts["architectures"] == [tl["original_architecture"]]


def _facts_of(config) -> dict:
    """A ``preset_models.json`` entry read off a transformers config."""
    text = getattr(config, "text_config", None) or config
    vision = getattr(config, "vision_config", None)
    keys = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size")
    t = {k: getattr(text, k) for k in (*keys, "num_attention_heads", "num_key_value_heads")}
    t |= {"head_dim": text.head_dim, "vocab_size": text.vocab_size}
    t["tie_word_embeddings"] = config.tie_word_embeddings
    v_keys = (*keys, "num_attention_heads", "image_size", "patch_size", "num_channels")
    return {"text": t, "vision": vision and {k: getattr(vision, k) for k in v_keys}}


def _tiny_models():
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        Gemma3Config,
        Gemma3ForCausalLM,
        Gemma3ForConditionalGeneration,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    common = dict(
        vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    )  # fmt: skip
    vision = dict(
        hidden_size=24, intermediate_size=40, num_hidden_layers=2, num_attention_heads=2,
        image_size=28, patch_size=7, vision_use_head=False,
    )  # fmt: skip
    text3 = Gemma3TextConfig(**common, sliding_window=16)
    yield LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False))
    yield LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True))
    yield Gemma2ForCausalLM(Gemma2Config(**common, sliding_window=16))
    yield Gemma3ForCausalLM(text3)
    yield Gemma3ForConditionalGeneration(
        Gemma3Config(text_config=text3.to_dict(), vision_config=vision, mm_tokens_per_image=4)
    )


def test_count_parameters_equals_real_models():
    torch.manual_seed(0)
    for model in _tiny_models():
        real = sum(p.numel() for p in model.parameters())  # tied weights counted once
        assert count_parameters(_facts_of(model.config)) == real, type(model).__name__


@pytest.mark.parametrize("model_id", sorted({get_preset(n).model for n in NAMES}))
def test_stored_parameter_counts_match_the_shapes(model_id):
    assert count_parameters(model_facts(model_id)) == model_facts(model_id)["parameters"]


def test_sae_parameter_count_equals_a_real_jumprelu_sae(resolved):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    for name in ("gemma-2-2b-it-65k", "llama-3.1-8b-instruct", "gemma-3-1b-it"):
        s = resolved[name].saes[0]
        # the real shapes, no memory
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=s.d_in, d_sae=s.d_sae, device="meta"))
        assert s.parameters == sum(p.numel() for p in sae.parameters()), name


def test_widths():
    expected = {"4k": 4096, "16k": 16384, "32k": 32768, "65k": 65536, "131k": 131072}
    expected |= {"262k": 262144, "524k": 524288, "1m": 1048576}
    assert {w: width_latents(w) for w in expected} == expected
    for bad in ("100k", "16", "wide"):
        with pytest.raises(RefusalScopeError):
            width_latents(bad)
    assert sae_width_from_id("l15r_8x", "Llama3_1-8B-Base-L15R-8x", 4096) == 32768
    assert sae_width_from_id("layer_5_width_1m_l0_big", "resid_post/x", 640) == 1 << 20


def test_sizes_of_the_papers_gemma_setting(resolved):
    r = resolved["gemma-2-2b-it-65k"]
    per_layer = (2 * 2304 * 65536 + 2 * 65536 + 2304) * 4  # W_enc, W_dec, b_enc, θ, b_dec
    assert [s.bytes("float32") for s in r.saes] == [per_layer] * 26
    assert r.sae_bytes("float32") == 26 * per_layer
    assert 31.3e9 < r.sae_bytes("float32") < 31.5e9  # ≈ 31 GB for 26 layers
    assert r.sae_bytes("bfloat16") * 2 == r.sae_bytes("float32")
    assert r.parameters == 2_614_341_888 and r.model_bytes == 2 * r.parameters
    text = describe_preset(r)
    for part in ("0.60 GB per layer in bfloat16", "31.42 GB in float32", "15.71 GB in bfloat16",
                 "2.61 B parameters, 5.23 GB in bfloat16", "26 layers: 0-25", "l* = 15",
                 "c = -3.0", "no system role", "gemma-2-2b/15-gemmascope-res-65k"):  # fmt: skip
        assert part in text, part
    assert len(re.findall(r"^    layer \d+: ", text, flags=re.M)) == 26
    assert "vision tower included" in describe_preset(resolved["gemma-3-4b-it"])
    assert "none published" in describe_preset(resolved["gemma-3-4b-it"])


def test_errors():
    with pytest.raises(RefusalScopeError, match="choose one of gemma-2-2b-it"):
        get_preset("gemma-7b")
    with pytest.raises(RefusalScopeError, match="unknown preset field"):
        resolve_preset("gemma-2-2b-it", {"wdith": "65k"})
    # 1m SAEs exist for three layers only: "all" layers is an error naming them
    with pytest.raises(RefusalScopeError, match=r"has layers \[5, 12, 19\]"):
        resolve_preset("gemma-2-2b-it", {"width": "1m"})
    with pytest.raises(RefusalScopeError, match=r"layer\(s\) \[26\]"):
        resolve_preset("gemma-2-2b-it", {"layers": [3, 26]})
    with pytest.raises(RefusalScopeError, match="variant tiny"):
        resolve_preset("gemma-3-1b-it-65k", {"variant": "tiny"})
    with pytest.raises(RefusalScopeError, match="no SAE release 'nope'"):
        resolve_preset("gemma-2-2b-it", {"release": "nope"})
    with pytest.raises(RefusalScopeError, match="no published l"):
        preset_run_config("gemma-3-1b-it", pin_layer=True)


def test_overrides_select_other_saes(resolved):
    r = resolve_preset("gemma-2-2b-it", {"width": "1m", "layers": [5, 19]})
    assert r.ids == {5: "layer_5/width_1m/canonical", 19: "layer_19/width_1m/canonical"}
    assert r.saes[0].d_sae == 1 << 20
    assert (
        resolve_preset("gemma-2-2b-it", {"width": "65k"}).ids == resolved["gemma-2-2b-it-65k"].ids
    )


@pytest.mark.parametrize("name", NAMES)
def test_run_config_loads_as_run_config(name, resolved):
    raw = preset_run_config(name)
    extras = raw.pop(PRESET_KEY)
    cfg = from_dict(RunConfig, json.loads(json.dumps(raw)))  # as a config file would
    p = get_preset(name)
    assert (cfg.model.path, cfg.model.dtype) == (p.model, p.dtype)
    assert (cfg.saes.release, cfg.saes.ids, cfg.saes.dtype) == (
        p.release, resolved[name].ids, p.sae_dtype,
    )  # fmt: skip
    assert cfg.attribution.refusal_token == p.refusal_token
    assert extras["judges"][0] == "harmbench"
    assert set(extras["prompt_splits"]) == {
        f"{h}_{s}" for h in ("harmful", "harmless") for s in ("train", "val", "test")
    }
    assert extras["jailbreak_sets"] == ["harmbench:test", "jailbreakbench", "advbench"]


def test_run_config_carries_the_authors_defaults():
    raw = preset_run_config("llama-3.1-8b-instruct", pin_layer=True)
    raw.pop(PRESET_KEY)
    cfg = from_dict(RunConfig, raw)
    ev = cfg.evaluation
    assert (ev.c, ev.k_star, ev.induction_values) == (-1.0, 20, (1.0, 2.0, 3.0, 4.0, 5.0))
    assert cfg.direction.candidate_layers == (11,)
    assert cfg.attribution.refusal_token == "I"
    gemma3 = preset_run_config("gemma-3-1b-it")
    assert "evaluation" not in gemma3 and "attribution" not in gemma3  # nothing published
    assert get_preset("gemma-2-2b-it").system_role is False
    assert get_preset("llama-3.1-8b-instruct").system_role is True
