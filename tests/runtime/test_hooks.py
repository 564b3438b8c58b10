"""hooks.hooked on a toy decoder: tensor and tuple layer outputs, order, prefill."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.hooks import EMBED, Capture, hooked
from refusalscope.runtime.interventions import AblateDirection, AddDirection

D, N_LAYERS = 8, 3


class ToyLayer(nn.Module):
    def __init__(self, tuple_out: bool) -> None:
        super().__init__()
        self.lin = nn.Linear(D, D)
        self.tuple_out = tuple_out

    def forward(self, hidden_states, attention_mask=None):
        out = hidden_states + torch.tanh(self.lin(hidden_states))
        return (out, "extra") if self.tuple_out else out


class Toy(nn.Module):
    """Embedding x2 (like Gemma's scaling), then residual layers called like HF does."""

    def __init__(self, tuple_out: bool, kwarg_call: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, D)
        self.layers = nn.ModuleList(ToyLayer(tuple_out) for _ in range(N_LAYERS))
        self.tuple_out, self.kwarg_call = tuple_out, kwarg_call
        self.extras: list = []

    def forward(self, input_ids, past_key_values=None, cache=None):
        h = self.emb(input_ids) * 2
        for layer in self.layers:
            out = layer(hidden_states=h) if self.kwarg_call else layer(h)
            if self.tuple_out:
                out, extra = out
                self.extras.append(extra)
            h = out
        return h


class FakeCache:
    def __init__(self, n: int) -> None:
        self.n = n

    def get_seq_length(self) -> int:
        return self.n


IDS = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])


def _reference(toy: Toy, add_at: int | None = None, v: torch.Tensor | None = None):
    """Residuals at EMBED, 0, 1, 2 computed by hand, with ``v`` added at ``add_at``."""
    with torch.no_grad():
        h = toy.emb(IDS) * 2
        h = h + v if add_at == EMBED else h
        resid = {EMBED: h}
        for i, layer in enumerate(toy.layers):
            out = layer(h)
            h = out[0] if toy.tuple_out else out
            h = h + v if add_at == i else h
            resid[i] = h
    return resid


@pytest.mark.parametrize("tuple_out", [False, True], ids=["tensor", "tuple"])
@pytest.mark.parametrize("kwarg_call", [False, True], ids=["positional", "kwarg"])
@pytest.mark.parametrize("add_at", [None, EMBED, 1])
def test_capture_and_edit_match_reference(tuple_out: bool, kwarg_call: bool, add_at):
    toy = Toy(tuple_out, kwarg_call)
    v = torch.randn(D)
    want = _reference(toy, add_at, v)
    cap = Capture([EMBED, *range(N_LAYERS)])
    ivs = [] if add_at is None else [AddDirection(v, layer=add_at)]
    with torch.no_grad(), hooked(toy, toy.layers, [*ivs, cap]):
        out = toy(IDS)
    for site, h in want.items():
        torch.testing.assert_close(cap.get(site), h)
    torch.testing.assert_close(out, want[N_LAYERS - 1])
    if tuple_out:  # the rest of a tuple output survives the edit
        assert toy.extras == ["extra"] * N_LAYERS


def test_interventions_run_in_list_order():
    toy = Toy(tuple_out=False, kwarg_call=False)
    v = torch.randn(D)
    before, after = Capture([0]), Capture([0])
    with torch.no_grad(), hooked(toy, toy.layers, [before, AddDirection(v, layer=0), after]):
        toy(IDS)
    torch.testing.assert_close(after.get(0) - before.get(0), v.expand(2, 4, D))


@pytest.mark.parametrize("positions", ["prompt", "all"])
@pytest.mark.parametrize("cache_arg", ["past_key_values", "cache", "positional"])
def test_prompt_positions_only_act_on_prefill(positions: str, cache_arg: str):
    """The cache is recognised whatever it is passed as (transformers 4.x vs 5.x names)."""
    toy = Toy(tuple_out=False, kwarg_call=False)
    r = torch.randn(D)
    cap = Capture([1])
    ivs = [AblateDirection(r, positions=positions), cap]

    def call(ids, cache):
        return toy(ids, cache) if cache_arg == "positional" else toy(ids, **{cache_arg: cache})

    with torch.no_grad(), hooked(toy, toy.layers, ivs) as ctx:
        call(IDS, FakeCache(0))
        assert ctx.prefill
        call(IDS[:, :1], FakeCache(4))
        assert not ctx.prefill
        toy(IDS)  # no cache at all: a plain forward is a prefill
        assert ctx.prefill
    proj = [(h @ (r / r.norm())).abs().max().item() for h in cap.store[1]]
    assert proj[0] < 1e-5 and proj[2] < 1e-5
    assert (proj[1] < 1e-5) == (positions == "all")


def test_out_of_range_site_leaves_no_hooks():
    toy = Toy(tuple_out=False, kwarg_call=False)
    ivs = [Capture([0]), AddDirection(torch.ones(D), layer=3)]
    with pytest.raises(RefusalScopeError, match="AddDirection acts at layer 3"):
        hooked(toy, toy.layers, ivs).__enter__()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in toy.modules())
