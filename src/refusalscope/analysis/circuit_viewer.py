"""The F* circuit in the graph format of circuit-tracer's attribution-graph viewer (the
one Neuronpedia serves): ``metadata``, ``qParams``, ``nodes`` and ``links``, read by
``circuit_tracer.frontend.graph_models.Model``.

Our edges are means over prompts, not per position, so every feature node sits at one
context position (0) whose token reads "mean over N prompts"; one logit node stands for
the LA-IG metric ``logit[t_jb] − logit[t_ref]``, linked from each feature by its mean exact
effect. Links carry the *predicted* (gradient) edge weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def cantor(layer: int, latent: int) -> int:
    """The viewer's feature id for (layer, latent) with ``schema_version`` 1."""
    return (layer + latent) * (layer + latent + 1) // 2 + latent


def viewer_graph(
    graph: Mapping[str, Any], n_layers: int, n_prompts: int, slug: str, scan: str
) -> dict[str, Any]:
    """``graph`` (``CircuitResult.graph``) as a viewer graph file."""
    token = f"(mean over {n_prompts} prompts)"
    nodes = [
        {
            "node_id": f"{n['layer']}_{n['latent']}_0",
            "feature": cantor(n["layer"], n["latent"]),
            "layer": str(n["layer"]),
            "ctx_idx": 0,
            "feature_type": "cross layer transcoder",
            "jsNodeId": f"{n['layer']}_{n['latent']}-0",
            "clerp": f"L{n['layer']} #{n['latent']} ({n['role']}; LA-IG {n['laig']:.3g})",
            "influence": abs(n["exact_effect"]),
            "activation": None,
        }
        for n in graph["nodes"]
    ]
    logit_id = f"{n_layers + 1}_0_0"
    nodes.append(
        {
            "node_id": logit_id,
            "feature": 0,
            "layer": str(n_layers + 1),
            "ctx_idx": 0,
            "feature_type": "logit",
            "jsNodeId": "L_0-0",
            "clerp": 'Output "logit[t_jb] - logit[t_ref]" (p=1.000)',
            "is_target_logit": True,
            "token_prob": 1.0,
        }
    )
    links = [
        {
            "source": f"{e['from'][0]}_{e['from'][1]}_0",
            "target": f"{e['to'][0]}_{e['to'][1]}_0",
            "weight": e["predicted"],
        }
        for e in graph["edges"]
    ]
    links += [
        {"source": f"{n['layer']}_{n['latent']}_0", "target": logit_id, "weight": n["exact_effect"]}
        for n in graph["nodes"]
    ]
    metadata = {
        "slug": slug,
        "scan": scan,
        "transcoder_list": [],
        "prompt_tokens": [token],
        "prompt": token,
        "node_threshold": 0.8,
        "schema_version": 1,
    }
    q = {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "", "sg_pos": ""}
    return {"metadata": metadata, "qParams": q, "nodes": nodes, "links": links}
