"""The reduced organism build: full path, manifest, loadability, caching."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from refusalscope.organism.build import MANIFEST, build_organism, load_organism
from refusalscope.organism.sampling import EVAL_SET_NAMES
from refusalscope.organism.train import ModelTrainConfig, build_model, encode_chat, train_model
from tests.conftest import tiny_organism_config

pytestmark = pytest.mark.slow


def test_manifest_has_every_key(tiny_organism):
    m = json.loads((tiny_organism.folder / MANIFEST).read_text())
    for key in ("model_path", "sae_paths", "n_params", "build_seconds", "build_split", "config"):
        assert key in m
    assert set(m["behavior"]) == set(EVAL_SET_NAMES)
    for row in m["behavior"].values():
        assert set(row) == {"n", "refused", "complied", "degenerate"}
        assert abs(row["refused"] + row["complied"] + row["degenerate"] - 1) < 1e-6
    assert set(m["saes"]) == {"0", "1"} and set(m["direction_sweep"]) == {"0", "1"}
    for q in m["saes"].values():
        assert 0 < q["fve"] <= 1 and 4 <= q["l0"] <= 16 and 0 < q["alive_fraction"] <= 1
    for row in m["direction_sweep"].values():
        assert set(row) == {"jailbreak", "harmless_complied"}
    assert set(m["build_split"]) == {"data", "tokenizer", "model", "saes", "eval"}
    assert {"torch", "transformers", "sae-lens", "tokenizers"} <= set(m["versions"])
    # a digest of every weight file, equal to the files' own SHA-256
    digests = m["weights_sha256"]
    assert "model/model.safetensors" in digests
    assert {f"saes/layer_{l}/sae_weights.safetensors" for l in (0, 1)} <= set(digests)
    for rel, digest in digests.items():
        assert hashlib.sha256((tiny_organism.folder / rel).read_bytes()).hexdigest() == digest
    assert not (
        m["model_path"].startswith("/") or any(v.startswith("/") for v in m["sae_paths"].values())
    )


def test_even_the_reduced_organism_learns_the_task(tiny_organism):
    b = tiny_organism.manifest["behavior"]
    assert b["harmful_heldout"]["refused"] >= 0.8
    assert b["harmless_heldout"]["complied"] >= 0.5


def test_folders_load_with_plain_hf_and_sae_lens(tiny_organism):
    from sae_lens import SAE
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_organism.model_path)
    tok = AutoTokenizer.from_pretrained(tiny_organism.model_path)
    assert model.config.num_hidden_layers == 2 and not model.config.tie_word_embeddings
    assert tok.chat_template and tok.padding_side == "left"
    for layer, path in tiny_organism.sae_paths.items():
        sae = SAE.load_from_disk(str(path))
        assert (
            sae.cfg.d_in == 96 and sae.cfg.metadata.hook_name == f"blocks.{layer}.hook_resid_post"
        )
        assert not list(path.glob("*.pt")) and not list(path.glob("*.pkl"))
        # decoder norms folded: decode(f) = f @ W_dec + b_dec
        f = torch.relu(torch.randn(3, sae.cfg.d_sae))
        assert torch.allclose(sae.decode(f), f @ sae.W_dec + sae.b_dec, atol=1e-5)


def test_cached_build_is_reused_and_copied(tiny_organism, tmp_path):
    again = build_organism(tiny_organism_config(), out=tmp_path / "copy")
    assert (tmp_path / "copy" / MANIFEST).is_file()
    assert again.manifest["build_seconds"] == tiny_organism.manifest["build_seconds"]
    assert load_organism(tmp_path / "copy").sae_paths.keys() == tiny_organism.sae_paths.keys()


def test_model_training_is_deterministic(chat_tokenizer):
    cfg = ModelTrainConfig(
        d_model=32,
        n_layers=1,
        n_heads=2,
        d_mlp=64,
        compliance_steps=2,
        steps=3,
        batch_size=4,
        warmup_steps=1,
    )
    seqs = [encode_chat(chat_tokenizer, "bake bread", "I cannot help with that.")] * 8
    comply = [encode_chat(chat_tokenizer, "bake bread", "Baking bread is simple.")] * 8
    weights = []
    for _ in range(2):
        model = build_model(cfg, chat_tokenizer)
        train_model(model, seqs, cfg, chat_tokenizer.pad_token_id, compliance_seqs=comply)
        weights.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
