"""Feature edges: the gradient prediction equals the measured patch where the path from
the upstream to the downstream latent is linear."""

from __future__ import annotations

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig
from torch import nn

from refusalscope.analysis.circuit import measured_edges, predicted_edges
from refusalscope.evaluation.patching import moving_latents
from refusalscope.runtime.model import ChatModel
from refusalscope.runtime.saes import SAESet
from refusalscope.runtime.types import feature_list
from refusalscope.stages.attribution import cache_runs
from tests.conftest import make_tiny_model
from tests.stages.test_attribution import PROMPTS, REF, D, random_sae


def test_edges_are_exact_on_a_linear_path(chat_tokenizer):
    hf = make_tiny_model("llama", chat_tokenizer, n_layers=3)
    with torch.no_grad():
        for layer in hf.model.layers[1:]:  # layers 1-2 write nothing: h_2 = h_0
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    hf.model.norm = nn.Identity()
    model = ChatModel(hf, chat_tokenizer)
    up = random_sae("jumprelu", 0)
    down = JumpReLUSAE(JumpReLUSAEConfig(d_in=D, d_sae=8))
    with torch.no_grad():  # always far above threshold: a_d is linear in the residual
        down.W_enc.normal_(0, 0.1)
        down.b_enc.fill_(10.0)
        down.W_dec.normal_(0, 0.1)
    saes = SAESet._made({0: up, 2: down}, {0: "up", 2: "down"})
    r = torch.randn(D, generator=torch.Generator().manual_seed(5))
    ig = cache_runs(model, model.tokenize(PROMPTS), [0, 2], r, REF)
    ups = moving_latents(saes, ig, 0, r)[:4].tolist()
    feats = feature_list([(0, i) for i in ups] + [(2, 1), (2, 5)])
    pred = predicted_edges(model, saes, ig, feats, r)
    meas, _ = measured_edges(model, saes, ig, feats, r, REF, rows_per_forward=16)
    assert meas[:, :4, 4:].abs().max() > 1e-4
    torch.testing.assert_close(pred, meas, rtol=1e-3, atol=1e-5 * float(meas.abs().max()) + 2e-6)
    assert pred[:, 4:, :].abs().max() == 0  # no edge from a later layer


def test_the_viewer_graph_has_what_circuit_tracers_viewer_reads():
    from refusalscope.analysis.circuit_viewer import cantor, viewer_graph

    graph = {
        "nodes": [
            {"layer": 3, "latent": 1234, "role": "harm", "laig": 0.1, "exact_effect": 0.5},
            {"layer": 10, "latent": 42, "role": "refusal", "laig": 0.2, "exact_effect": -1.0},
        ],
        "edges": [{"from": [3, 1234], "to": [10, 42], "predicted": 1.73, "measured": 1.5}],
    }
    v = viewer_graph(graph, n_layers=26, n_prompts=7, slug="s", scan="gemma")
    assert {"slug", "scan", "transcoder_list", "prompt_tokens", "prompt"} <= set(v["metadata"])
    assert set(v["qParams"]) == {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"}
    ids = {n["node_id"] for n in v["nodes"]}
    for n in v["nodes"]:
        assert {"node_id", "feature", "layer", "ctx_idx", "feature_type", "jsNodeId"} <= set(n)
        assert isinstance(n["layer"], str) and n["ctx_idx"] < len(v["metadata"]["prompt_tokens"])
    assert v["nodes"][0]["feature"] == cantor(3, 1234) == 766937  # circuit-tracer's example
    logit = [n for n in v["nodes"] if n["feature_type"] == "logit"]
    assert len(logit) == 1 and logit[0]["layer"] == "27" and logit[0]["is_target_logit"]
    assert all(link["source"] in ids and link["target"] in ids for link in v["links"])
    assert {"source": "3_1234_0", "target": "10_42_0", "weight": 1.73} in v["links"]
