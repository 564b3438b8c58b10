"""One context manager that applies interventions to the residual stream.

A *site* is a point of the residual stream: ``EMBED`` (-1) is the input of the first
decoder layer (the embedding output, after any model-specific scaling), and ``l`` in
``0..n_layers-1`` is the output of decoder layer ``l`` (``resid_post``). ``attn_write(l)``
(-2 - l) is not a point of the stream but what layer ``l``'s attention adds to it (after
the post-attention norm where the architecture has one): editing it edits ``resid_mid``
by the same amount.

An intervention is a small object with ``sites(n_layers)`` and ``edit(site, h, ctx)``;
``edit`` returns the new residual (or ``None`` to leave it). At each site the
interventions run in list order, so a ``Capture`` placed first sees the stream before
the edits and one placed last sees it after. Hooks are always removed, also when the
body raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from .errors import RefusalScopeError

EMBED = -1
"""Site index of the embedding output (input of decoder layer 0)."""


def attn_write(layer: int) -> int:
    """The site of what decoder layer ``layer``'s attention writes to the residual stream."""
    return -2 - layer


def site_in_range(site: int, n_layers: int) -> bool:
    return attn_write(n_layers - 1) <= site < n_layers


Positions = Literal["all", "prompt"]
"""``all``: every forward call, including each generated token with the KV cache;
``prompt``: only the forward call that processes the prompt (prefill)."""


@dataclass
class EditContext:
    """What a hook knows about the current forward call."""

    prefill: bool = True
    """True while the prompt is processed; False on KV-cache decoding steps."""


class Intervention:
    """Base class: override ``sites`` and ``edit``; ``select`` for per-prompt data."""

    positions: Positions = "all"

    def sites(self, n_layers: int) -> set[int]:
        raise NotImplementedError

    def edit(
        self, site: int, h: Float[Tensor, "batch seq d_model"], ctx: EditContext
    ) -> Tensor | None:
        raise NotImplementedError

    def select(self, rows: Sequence[int]) -> Intervention:
        """The intervention for a batch made of these prompt indices (default: itself)."""
        return self

    def validate(self, n_layers: int, d_model: int) -> None:
        """Raise ``RefusalScopeError`` if this does not fit the model (default: fits)."""

    def active(self, ctx: EditContext) -> bool:
        return self.positions == "all" or ctx.prefill


@dataclass(eq=False)
class Capture(Intervention):
    """Records the residual at the given sites (one tensor per forward call)."""

    at: Sequence[int]
    detach: bool = True
    store: dict[int, list[Tensor]] = field(default_factory=dict)

    def sites(self, n_layers: int) -> set[int]:
        return set(self.at)

    def edit(self, site: int, h: Tensor, ctx: EditContext) -> None:
        self.store.setdefault(site, []).append(h.detach() if self.detach else h)
        return None

    def get(self, site: int) -> Tensor:
        """The tensor of the (single) forward call at ``site``."""
        calls = self.store.get(site, [])
        assert len(calls) == 1, f"expected one forward call at site {site}, got {len(calls)}"
        return calls[0]


def check_direction(r: Tensor, d_model: int, what: str = "direction") -> None:
    """Raise ``RefusalScopeError`` unless ``r`` is one vector of size ``d_model``."""
    if r.ndim != 1 or r.shape[0] != d_model:
        raise RefusalScopeError(
            f"{what} has shape {tuple(r.shape)} but the model has d_model={d_model}"
            " — was it computed on another model?"
        )


def is_prefill(args: tuple, kwargs: dict) -> bool:
    """Whether a forward call processes the prompt (no tokens in its KV cache yet).

    The cache is found by what it is (an object with ``get_seq_length``), not by its
    keyword: transformers 4.x passes it as ``past_key_values``, 5.x as ``cache``, and
    ``cache_position`` is gone in 5.x. A call with no cache is a plain forward: a prefill.
    """
    for value in (*args, *kwargs.values()):
        seq_length = getattr(value, "get_seq_length", None)
        if callable(seq_length):
            return seq_length() == 0
    return True


def _split_output(out: Any) -> tuple[Tensor, Any]:
    """Decoder layers return a tensor (transformers >= 4.56) or a tuple (older)."""
    if isinstance(out, tuple):
        return out[0], out
    return out, None


def _join_output(h: Tensor, packed: Any) -> Any:
    if packed is None:
        return h
    return (h, *packed[1:])


@contextmanager
def hooked(
    root: nn.Module,
    layers: Sequence[nn.Module],
    interventions: Sequence[Intervention],
) -> Iterator[EditContext]:
    """Apply ``interventions`` to every forward call of ``root`` inside the block."""
    n_layers = len(layers)
    by_site: dict[int, list[Intervention]] = {}
    for iv in interventions:
        for site in sorted(iv.sites(n_layers)):
            if not site_in_range(site, n_layers):
                raise RefusalScopeError(
                    f"{type(iv).__name__} acts at layer {site}, which is out of range for a "
                    f"{n_layers}-layer model (layers 0..{n_layers - 1}, {EMBED} for the embedding)"
                )
            by_site.setdefault(site, []).append(iv)
    ctx = EditContext()
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def run(site: int, h: Tensor) -> Tensor:
        for iv in by_site[site]:
            if iv.active(ctx):
                new = iv.edit(site, h, ctx)
                if new is not None:
                    h = new
        return h

    def root_pre(_mod: nn.Module, args: tuple, kwargs: dict) -> None:
        ctx.prefill = is_prefill(args, kwargs)

    def embed_pre(_mod: nn.Module, args: tuple, kwargs: dict) -> Any:
        if args:
            return (run(EMBED, args[0]), *args[1:]), kwargs
        kwargs["hidden_states"] = run(EMBED, kwargs["hidden_states"])
        return args, kwargs

    def make_post(site: int):
        def post(_mod: nn.Module, _args: tuple, out: Any) -> Any:
            h, packed = _split_output(out)
            return _join_output(run(site, h), packed)

        return post

    try:
        if by_site:
            handles.append(root.register_forward_pre_hook(root_pre, with_kwargs=True))
        for site in by_site:
            if site == EMBED:
                handles.append(layers[0].register_forward_pre_hook(embed_pre, with_kwargs=True))
            elif site < EMBED:
                writer = attention_writer(layers[-2 - site])
                handles.append(writer.register_forward_hook(make_post(site)))
            else:
                handles.append(layers[site].register_forward_hook(make_post(site)))
        yield ctx
    finally:
        for handle in handles:
            handle.remove()


def attention_writer(layer: nn.Module) -> nn.Module:
    """The module whose output a decoder layer adds to the residual stream after attention:
    the post-attention norm where sublayer outputs are normalised (Gemma 2/3, OLMo 2: they
    also have ``post_feedforward_layernorm``), else the attention block (Llama, Mistral,
    Qwen, GPT-2). Architectures with parallel attention and MLP have no ``resid_mid``."""
    if hasattr(layer, "post_feedforward_layernorm") and hasattr(layer, "post_attention_layernorm"):
        return layer.post_attention_layernorm
    for name in ("self_attn", "attn", "attention"):
        if isinstance(getattr(layer, name, None), nn.Module):
            return getattr(layer, name)
    raise RefusalScopeError(
        f"cannot find the attention block of {type(layer).__name__} (looked for self_attn, "
        "attn, attention): resid_mid edits are not supported for this architecture"
    )
