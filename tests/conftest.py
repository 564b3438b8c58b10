"""Tiny models and tokenizers built in the tests (no downloads)."""

from __future__ import annotations

import pytest
import torch

from refusalscope.organism.tokenizer import train_chat_tokenizer
from refusalscope.runtime.model import ChatModel

CORPUS = [
    "how do I bake bread at home",
    "write a short poem about the sea",
    "Sure, here is a plan for your garden.",
    "I can't help with that request.",
    "explain how to fix a bicycle chain",
    "tell me a story about a dragon and a knight",
] * 10


def make_tiny_model(arch: str, tokenizer, seed: int = 0, n_layers: int = 2, d_model: int = 64):
    """A randomly initialised causal LM of the given family, a few hundred K parameters."""
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    families = {
        "llama": (LlamaConfig, LlamaForCausalLM, {}),
        "mistral": (MistralConfig, MistralForCausalLM, {"sliding_window": None}),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
        "gemma2": (
            Gemma2Config,
            Gemma2ForCausalLM,
            {"head_dim": d_model // 4, "query_pre_attn_scalar": d_model // 4, "sliding_window": 64},
        ),
    }
    cfg_cls, model_cls, extra = families[arch]
    torch.manual_seed(seed)
    cfg = cfg_cls(**common, **extra)
    return model_cls(cfg).eval()


ARCHS = ("llama", "gemma2", "qwen2", "mistral")


@pytest.fixture(scope="session")
def chat_tokenizer():
    return train_chat_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture(scope="session")
def tiny_chat_model(chat_tokenizer) -> ChatModel:
    return ChatModel(make_tiny_model("llama", chat_tokenizer), chat_tokenizer, name="tiny-llama")


def tiny_organism_config():
    """A reduced organism (about a minute on 2 cores) that exercises the full build path."""
    from refusalscope.organism.build import OrganismConfig
    from refusalscope.organism.data import OrganismDataConfig
    from refusalscope.organism.sae_training import SAETrainConfig
    from refusalscope.organism.train import ModelTrainConfig
    from refusalscope.stages.direction import DirectionConfig

    return OrganismConfig(
        seed=0,
        data=OrganismDataConfig(
            n_train_examples=12000,
            n_eval_per_set=16,
            n_plain_heldout=32,
            n_split_train=24,
            n_split_val=8,
            n_split_test=16,
        ),
        vocab_size=700,
        model=ModelTrainConfig(
            d_model=96,
            n_layers=2,
            n_heads=4,
            d_mlp=384,
            compliance_steps=150,
            steps=600,
            batch_size=48,
            warmup_steps=20,
        ),
        # BatchTopK's JumpReLU threshold is a running average: ~400 steps let it settle
        sae=SAETrainConfig(expansion=4, k=8, n_tokens=400_000, batch_size=1024),
        sae_max_tokens=30_000,
        eval_max_new_tokens=24,
        direction=DirectionConfig(n_sweep=8, max_new_tokens=24),
    )


@pytest.fixture(scope="session")
def organism_cache(tmp_path_factory):
    """A private cache folder for everything the organism/pipeline tests build."""
    import os

    from refusalscope.runtime.cache import CACHE_ENV

    folder = tmp_path_factory.mktemp("cache")
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(folder)
    yield folder
    if old is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = old


@pytest.fixture(scope="session")
def tiny_organism(organism_cache):
    from refusalscope.organism.build import build_organism

    return build_organism(tiny_organism_config())
