"""Feature cards on a tiny model with a planted feature: the planted token tops its
contexts, the planted output token tops its logit lens, the planted label is the one it
tracks; which features get cards and why; Neuronpedia links from sae_lens's registry."""

from __future__ import annotations

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

from refusalscope.analysis.cards import (
    clamp_alone,
    logit_lens,
    neuronpedia_links,
    selected_features,
)
from refusalscope.analysis.corpus import (
    histogram,
    label_tracking,
    prompt_items,
    scan_corpus,
    text_items,
    top_contexts,
)
from refusalscope.runtime.model import ChatModel
from refusalscope.runtime.saes import SAESet
from refusalscope.runtime.types import Prompt, feature_list
from refusalscope.stages.features import FeatureSets
from tests.conftest import make_tiny_model

D, W = 64, 8
TEXTS = [
    "tell me a story about a dragon and a knight",
    "how do I bake bread at home",
    "write a short poem about the sea",
    "the dragon slept while the knight wrote a poem",
    "explain how to fix a bicycle chain",
]


@pytest.fixture(scope="module")
def planted(chat_tokenizer):
    """Token ``dragon`` carries a large component along ``u`` in its embedding; latent 0 of
    layer 0's SAE reads ``u`` with a threshold only that token clears, and writes ``v``,
    which the unembedding row of ``bread`` reads."""
    hf = make_tiny_model("llama", chat_tokenizer, n_layers=2, d_model=D)
    model = ChatModel(hf, chat_tokenizer, name="planted")
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(D, generator=g), torch.randn(D, generator=g)
    u, v = u / u.norm(), v / v.norm()
    dragon = chat_tokenizer.encode(" dragon", add_special_tokens=False)
    bread = chat_tokenizer.encode(" bread", add_special_tokens=False)
    assert len(dragon) == 1 and len(bread) == 1, "the planted words must be single tokens"
    with torch.no_grad():
        hf.get_input_embeddings().weight[dragon[0]] += 8 * u
        hf.get_output_embeddings().weight[bread[0]] += 8 * v
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=D, d_sae=W))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[:, 0] = u
        sae.W_enc[:, 1] = v  # a latent that never fires on the corpus
        sae.b_enc.zero_()
        sae.threshold.fill_(4.0)
        sae.W_dec.normal_(0, 0.05, generator=g)
        sae.W_dec[0] = v
        sae.b_dec.zero_()
    saes = SAESet._made({0: sae}, {0: "planted"})
    return model, saes, dragon[0], bread[0]


def test_the_planted_token_tops_every_context_and_the_lens_tops_the_output(planted):
    model, saes, dragon, bread = planted
    items = text_items(model, TEXTS, max_tokens=64)
    feats = feature_list([(0, 0), (0, 1)])
    scan = scan_corpus(model, saes, items, feats, batch_size=2)
    contexts = top_contexts(model, saes, items, feats, scan.item_max, 5, 3, 2, batch_size=2)
    word = model.tokenizer.decode([dragon])
    assert [c["tokens"][c["peak"]] for c in contexts[0]] == [word, word]  # two texts have it
    assert all(c["acts"][c["peak"]] > 4 for c in contexts[0])
    assert contexts[1] == []  # latent 1 never fires
    n_dragon = sum(it.ids.count(dragon) for it in items)
    assert len(scan.nonzero[0]) == n_dragon == 2
    assert len(scan.nonzero[1]) == 0
    hist = histogram(scan.nonzero[0], bins=4)
    assert sum(hist["counts"]) == 2 and len(hist["edges"]) == 5
    lens = logit_lens(model, saes, feats, k=3)
    assert lens[0]["top"][0][0] == model.tokenizer.decode([bread])


def test_the_planted_label_is_the_one_it_tracks(planted):
    model, saes, _, _ = planted
    prompts = [
        Prompt(t, harmful=False, category="fantasy" if "dragon" in t else "everyday")
        for t in TEXTS * 2
    ]
    items = prompt_items(model, prompts, max_tokens=64)
    feats = feature_list([(0, 0)])
    scan = scan_corpus(model, saes, items, feats)
    (labels,) = label_tracking(items, scan.scored_max)
    best = labels[0]
    assert (best["family"], best["value"]) == ("category", "fantasy")
    assert best["selectivity"] is None and best["mean_in"] > 4  # fires only there


def test_clamping_alone_moves_the_metric_only_where_the_feature_fires(planted):
    model, saes, _, _ = planted
    tokens = model.tokenize(TEXTS[:3])
    jb = torch.tensor([7, 7, 7])
    feats = feature_list([(0, 0), (0, 1)])
    effect = clamp_alone(model, saes, tokens, jb, 5, feats, c=0.0, rows_per_forward=4)
    assert effect.shape == (3, 2)
    assert effect[0, 0].abs() > 1e-4  # "dragon" is in the first prompt
    assert effect[1:, 0].abs().max() < 1e-5 and effect[:, 1].abs().max() < 1e-5
    same = clamp_alone(model, saes, tokens, jb, 5, feats, c=1.0, rows_per_forward=4)
    assert same.abs().max() < 1e-5


def test_every_selected_feature_is_listed_once_with_every_reason():
    sets = FeatureSets(
        prompt_sets={"fstar": {"test": [feature_list([(1, 2), (0, 5)]), feature_list([(1, 2)])]}},
        global_sets={"fstar": feature_list([(1, 2), (0, 5)]), "cossim": feature_list([(0, 9)])},
        global_scores={},
    )
    summary = {"categories": {"common": [[1, 2]], "specific": {"drugs": [[0, 7]]}}}
    picks = selected_features(sets, 2, summary, [{"layer": 0, "latent": 5, "role": "harm"}])
    assert list(picks) == [(1, 2), (0, 5), (0, 9), (0, 7)]
    assert picks[(1, 2)] == [
        "F* #1",
        "per-prompt F* on 2/2 test prompts",
        "harm categories: common to all",
    ]
    assert picks[(0, 5)][-1] == "circuit: harm feature"
    assert picks[(0, 7)] == ["harm categories: specific to drugs"]


def test_neuronpedia_links_come_from_the_sae_lens_registry(tmp_path):
    feats = feature_list([(0, 5), (1, 3)])
    sources = {0: "gemma-scope-2b-pt-res-canonical:layer_0/width_16k/canonical", 1: str(tmp_path)}
    assert neuronpedia_links(sources, feats) == [
        "https://www.neuronpedia.org/gemma-2-2b/0-gemmascope-res-16k/5",
        None,
    ]
