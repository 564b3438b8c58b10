"""Exact activation patching of SAE latents: the ground truth LA-IG approximates.

The exact effect of latent ``(l, i)`` on a prompt is ``Δm``, the change of the LA-IG
metric ``m = logit[t_jb] − logit[t_ref]`` when only that latent is moved from its clean
to its counterfactual value (the SAE's reading of the direction-ablated run) at the
prompt positions LA-IG averages over, in the clean run, everything downstream live and
the SAE error kept: ``h_l ← h_l + (f_patch − f_clean)_i · W_dec[i]``. One forward per
(prompt, latent), batched: each row of a forward patches its own latent
(``runtime.patching.EditLatents``), so the cost is one bare forward per row whatever the
SAE width. A *joint* effect moves a whole set at once (each latent set to its
counterfactual value on the residual as it arrives, the SAE in the loop).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from ..runtime.hooks import Capture, EditContext
from ..runtime.interventions import AblateDirection
from ..runtime.model import ChatModel
from ..runtime.patching import EditLatents, per_row_latents, positions
from ..runtime.saes import SAESet
from ..runtime.tokens import TokenBatch
from ..runtime.types import FeatureList, feature_list
from ..stages.attribution import IGCache, metric


def counterfactual_residual(ig: IGCache, layer: int, direction: Tensor) -> Tensor:
    """What the SAE at ``layer`` reads in the counterfactual run: ``ablate(a_l)``."""
    return AblateDirection(direction).edit(layer, ig.patch_in[layer], EditContext())


def latent_values(
    saes: SAESet, ig: IGCache, features: FeatureList, direction: Tensor
) -> tuple[Float[Tensor, "batch seq n"], Float[Tensor, "batch seq n"]]:
    """Clean and counterfactual activations of ``features`` at every position."""
    features = feature_list(features)
    B, T = ig.tokens.input_ids.shape
    clean = torch.zeros(B, T, len(features), device=ig.tokens.input_ids.device)
    patched = torch.zeros_like(clean)
    for layer in sorted(set(features[:, 0].tolist())):
        cols = (features[:, 0] == layer).nonzero()[:, 0]
        idx = features[cols, 1]
        clean[:, :, cols.to(clean.device)] = saes.encode(layer, ig.clean[layer], idx).float()
        cf = counterfactual_residual(ig, layer, direction)
        patched[:, :, cols.to(clean.device)] = saes.encode(layer, cf, idx).float()
    return clean, patched


def _repeat(tokens: TokenBatch, n: int) -> TokenBatch:
    """Each row ``n`` times in a row (row ``b·n + c``)."""
    return TokenBatch(
        tokens.input_ids.repeat_interleave(n, 0),
        tokens.attention_mask.repeat_interleave(n, 0),
        tokens.prompt_mask.repeat_interleave(n, 0),
    )


@torch.no_grad()
def exact_effects(
    model: ChatModel,
    saes: SAESet,
    ig: IGCache,
    features: FeatureList,
    direction: Tensor,
    ref_token: int,
    rows_per_forward: int = 256,
    readout: FeatureList | None = None,
) -> tuple[Float[Tensor, "batch n"], Float[Tensor, "batch n r"] | None]:
    """``Δm`` of each of ``features`` moved alone, for every prompt of ``ig``'s batch.

    Only the (prompt, latent) pairs where the latent moves are run, ``rows_per_forward``
    to a forward; a latent that does not move has effect 0 exactly. With ``readout``, also
    the change of each readout latent's mean activation over the prompt positions in every
    patched run from the clean run (read where the residual reaches its layer, before any
    edit there; 0 for a pair not run).
    """
    features = feature_list(features)
    tokens = ig.tokens
    clean, patched = latent_values(saes, ig, features, direction)
    where = tokens.prompt_mask
    moves = ((patched - clean).abs() * where[:, :, None]).amax(1) > 0  # [B, n]
    effect = torch.zeros(moves.shape)
    reads = base = None
    if readout is not None:
        readout = feature_list(readout)
        base = _readout_clean(model, saes, tokens, readout)
        reads = torch.zeros(*moves.shape, len(readout))
    pairs = moves.nonzero().cpu()  # (prompt, feature) rows to run
    jb = ig.jb_token.to(where.device)
    for chunk in pairs.split(rows_per_forward) if len(pairs) else ():
        b, j = chunk[:, 0].to(where.device), chunk[:, 1]
        feats = features[j]
        latents, mask, target = {}, {}, {}
        for layer in sorted(set(feats[:, 0].tolist())):
            on = (feats[:, 0] == layer).to(where.device)
            latents[layer] = torch.where(on, feats[:, 1].to(where.device), 0)[:, None]
            mask[layer] = on[:, None]
            target[layer] = patched[b, :, j.to(where.device)][:, :, None]
        rows = TokenBatch(tokens.input_ids[b], tokens.attention_mask[b], where[b])
        on = {l: positions(m, where[b]) for l, m in mask.items()}
        ivs: list = [EditLatents(saes, latents, on, target)]
        cap = Capture(sorted(set(readout[:, 0].tolist()))) if readout is not None else None
        assert cap is None or (reads is not None and base is not None)
        if cap is not None:
            ivs.insert(0, cap)
        m = metric(model.forward(rows, ivs, last_only=True), jb[b], ref_token)
        effect[chunk[:, 0], j] = (m - ig.metric_clean.to(m.device)[b]).cpu()
        if cap is not None:
            read = readout_means(saes, cap, readout, where[b]).cpu()
            reads[chunk[:, 0], j] = read - base[chunk[:, 0]]
    return effect, reads


def _readout_clean(
    model: ChatModel, saes: SAESet, tokens: TokenBatch, readout: FeatureList
) -> Tensor:
    cap = Capture(sorted(set(readout[:, 0].tolist())))
    model.forward(tokens, [cap], last_only=True)
    return readout_means(saes, cap, readout, tokens.prompt_mask).cpu()


def readout_means(
    saes: SAESet, cap: Capture, readout: FeatureList, where: Tensor
) -> Float[Tensor, "rows r"]:
    """Each readout latent's mean activation over ``where`` in a captured run."""
    out = torch.zeros(where.shape[0], len(readout), device=where.device)
    w = where[:, :, None].float()
    for layer in sorted(set(readout[:, 0].tolist())):
        cols = (readout[:, 0] == layer).nonzero()[:, 0].to(where.device)
        f = saes.encode(layer, cap.get(layer), readout[cols.cpu(), 1]).float()
        out[:, cols] = (f * w).sum(1) / w.sum(1).clamp(min=1)
    return out


@torch.no_grad()
def joint_effects(
    model: ChatModel,
    saes: SAESet,
    ig: IGCache,
    sets: Sequence[Sequence[FeatureList]],
    direction: Tensor,
    ref_token: int,
) -> Float[Tensor, "batch sets"]:
    """``Δm`` of moving each whole set at once; ``sets[s][b]`` is set ``s`` for prompt ``b``."""
    tokens = ig.tokens
    B = tokens.input_ids.shape[0]
    S = len(sets)
    per_row = [feature_list(sets[s][b]) for b in range(B) for s in range(S)]  # row b·S + s
    latents, mask = per_row_latents(per_row)
    prompt_of = torch.arange(B).repeat_interleave(S)
    target = {}
    for layer, idx in latents.items():
        cf = counterfactual_residual(ig, layer, direction)[prompt_of.to(ig.clean[layer].device)]
        target[layer] = saes.encode(layer, cf, idx).float()
    where = tokens.prompt_mask.repeat_interleave(S, 0)
    on = {l: positions(m, where) for l, m in mask.items()}
    patch = EditLatents(saes, latents, on, target)
    jb = ig.jb_token.to(tokens.input_ids.device).repeat_interleave(S)
    m = metric(model.forward(_repeat(tokens, S), [patch], last_only=True), jb, ref_token)
    return (m.view(B, S) - ig.metric_clean[:, None].to(m.device)).cpu()


def moving_latents(
    saes: SAESet, ig: IGCache, layer: int, direction: Tensor, chunk: int = 16384
) -> Tensor:
    """Latents of ``layer`` whose value changes at some prompt position of a one-prompt
    batch (the only ones with a non-zero exact effect)."""
    out = []
    cf = counterfactual_residual(ig, layer, direction)
    where = ig.tokens.prompt_mask[:, :, None]
    for start in range(0, saes.d_sae(layer), chunk):
        idx = torch.arange(start, min(start + chunk, saes.d_sae(layer)))
        diff = (
            saes.encode(layer, cf, idx).float() - saes.encode(layer, ig.clean[layer], idx).float()
        )
        moved = ((diff.abs() * where).amax(1) > 0).any(0).cpu()
        out.append(idx[moved])
    return torch.cat(out)


def all_latent_top(
    model: ChatModel,
    saes: SAESet,
    ig: IGCache,
    direction: Tensor,
    ref_token: int,
    k: int,
    rows_per_forward: int = 256,
) -> tuple[FeatureList, Float[Tensor, " k"], int]:
    """On a one-prompt batch, patch every latent of every SAE that moves and return the
    ``k`` largest exact effects (as (layer, latent) pairs), and how many latents moved."""
    moving = feature_list(
        [(l, int(i)) for l in saes.layers for i in moving_latents(saes, ig, l, direction)]
    )
    if len(moving) == 0:
        return feature_list([]), torch.zeros(0), 0
    effect, _ = exact_effects(model, saes, ig, moving, direction, ref_token, rows_per_forward)
    top = effect[0].topk(min(k, len(moving)))
    return moving[top.indices], top.values, len(moving)
