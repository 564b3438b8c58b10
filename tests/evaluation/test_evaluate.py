"""Evaluation helpers: the sweep-cell choice and the teacher-forced CE per token."""

from __future__ import annotations

import pytest
import torch

from refusalscope.evaluation.capability import ce_per_token
from refusalscope.evaluation.sweep import choose_sweep_cell
from refusalscope.runtime.interventions import AblateDirection
from refusalscope.runtime.model import ChatModel


def table(cells: dict[tuple[float, int], float]) -> dict[str, dict[str, dict]]:
    """``{(c, k): complied}`` -> the sweep table layout ``table[str(c)][str(k)]``."""
    out: dict[str, dict[str, dict]] = {}
    for (c, k), rate in cells.items():
        out.setdefault(str(c), {})[str(k)] = {"n": 8, "complied": rate, "refused": 1 - rate}
    return out


# ------------------------------------------------------------- choose_sweep_cell
def test_sweep_cell_is_the_highest_complied_rate():
    t = table({(0.0, 10): 0.1, (-1.0, 10): 0.3, (-1.0, 20): 0.7, (-3.0, 40): 0.6})
    assert choose_sweep_cell(t) == (-1.0, 20)


def test_sweep_cell_tie_goes_to_smaller_k():
    """Equal rates: fewer clamped features win, even with a harsher clamp."""
    t = table({(-1.0, 30): 0.5, (-3.0, 10): 0.5, (0.0, 20): 0.5, (-2.0, 50): 0.2})
    assert choose_sweep_cell(t) == (-3.0, 10)


def test_sweep_cell_tie_at_same_k_goes_to_gentler_clamp():
    """Equal rate and K*: the c closer to 0 wins (-1.0 beats -3.0 and -2.0)."""
    t = table({(-3.0, 20): 0.5, (-1.0, 20): 0.5, (-2.0, 20): 0.5, (-1.0, 40): 0.5})
    assert choose_sweep_cell(t) == (-1.0, 20)


def test_sweep_cell_zero_clamp_beats_negative_on_full_tie():
    t = table({(-3.0, 10): 0.25, (0.0, 10): 0.25})
    assert choose_sweep_cell(t) == (0.0, 10)


def test_sweep_cell_returns_float_c_and_int_k():
    c, k = choose_sweep_cell(table({(-2.0, 30): 1.0}))
    assert (c, k) == (-2.0, 30) and type(c) is float and type(k) is int


def test_sweep_cell_ignores_other_summary_fields():
    """Only ``complied`` counts, not ``refused`` or ``n``."""
    t = table({(-1.0, 10): 0.4, (-2.0, 10): 0.6})
    t["-1.0"]["10"].update(refused=0.0, n=100)
    assert choose_sweep_cell(t) == (-2.0, 10)


def test_sweep_cell_reads_ragged_tables():
    """K* values above the pool are skipped per c, so rows can differ in keys."""
    t = table({(0.0, 10): 0.2, (-3.0, 10): 0.2, (-3.0, 20): 0.9})
    assert choose_sweep_cell(t) == (-3.0, 20)


# ------------------------------------------------------------------ ce_per_token
def random_sequences(model: ChatModel, lengths, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    vocab = model.hf.config.vocab_size
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]


def hf_loss(model: ChatModel, seq: list[int]) -> float:
    ids = torch.tensor(seq)[None]
    with torch.no_grad():
        return float(model.hf(input_ids=ids, labels=ids).loss)


def manual_nll(model: ChatModel, seq: list[int], start: int) -> torch.Tensor:
    """NLL of tokens ``start..`` of one unpadded sequence, from log_softmax."""
    ids = torch.tensor(seq)
    with torch.no_grad():
        logits = model.hf(input_ids=ids[None]).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    return torch.stack([-logp[t - 1, ids[t]] for t in range(start, len(seq))])


LENGTHS = (6, 11, 3, 9, 14)


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_ce_equals_hf_loss_token_weighted(tiny_chat_model, batch_size):
    """start=1, right-padded batches: the token-weighted mean of HF's per-sequence loss."""
    seqs = random_sequences(tiny_chat_model, LENGTHS)
    got = ce_per_token(tiny_chat_model, [(s, 1) for s in seqs], batch_size=batch_size)
    weights = [len(s) - 1 for s in seqs]
    want = sum(hf_loss(tiny_chat_model, s) * w for s, w in zip(seqs, weights, strict=True))
    want /= sum(weights)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_ce_is_not_the_unweighted_mean_of_losses(tiny_chat_model):
    """The weighting matters here, so the test above can tell the two apart."""
    seqs = random_sequences(tiny_chat_model, LENGTHS)
    got = ce_per_token(tiny_chat_model, [(s, 1) for s in seqs], batch_size=5)
    unweighted = sum(hf_loss(tiny_chat_model, s) for s in seqs) / len(seqs)
    assert abs(got - unweighted) > 1e-4


@pytest.mark.parametrize("batch_size", [1, 3])
def test_ce_scores_only_tokens_from_start(tiny_chat_model, batch_size):
    seqs = random_sequences(tiny_chat_model, (8, 12, 5, 10), seed=1)
    pairs = list(zip(seqs, (4, 2, 4, 9), strict=True))
    got = ce_per_token(tiny_chat_model, pairs, batch_size=batch_size)
    nll = torch.cat([manual_nll(tiny_chat_model, s, st) for s, st in pairs])
    assert nll.numel() == sum(len(s) - st for s, st in pairs)
    assert got == pytest.approx(float(nll.mean()), rel=1e-5, abs=1e-5)
    all_tokens = ce_per_token(tiny_chat_model, [(s, 1) for s in seqs], batch_size=batch_size)
    assert abs(got - all_tokens) > 1e-4


def test_ce_start_zero_scores_like_start_one(tiny_chat_model):
    """The first token has no prediction, so start 0 and start 1 score the same tokens."""
    seqs = random_sequences(tiny_chat_model, (7, 4), seed=2)
    a = ce_per_token(tiny_chat_model, [(s, 0) for s in seqs])
    b = ce_per_token(tiny_chat_model, [(s, 1) for s in seqs])
    assert a == pytest.approx(b, rel=1e-6)


def test_ce_applies_interventions(tiny_chat_model):
    """With an ablation, CE equals HF's loss computed under the same hooks, unpadded."""
    m = tiny_chat_model
    seqs = random_sequences(m, (5, 10, 7), seed=3)
    r = torch.randn(m.d_model, generator=torch.Generator().manual_seed(4))
    ablate = AblateDirection(r)
    got = ce_per_token(m, [(s, 1) for s in seqs], [ablate], batch_size=3)
    with m.hooked([ablate]):
        losses = [hf_loss(m, s) for s in seqs]
    want = sum(l * (len(s) - 1) for l, s in zip(losses, seqs, strict=True))
    want /= sum(len(s) - 1 for s in seqs)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-5)
    plain = ce_per_token(m, [(s, 1) for s in seqs], batch_size=3)
    assert abs(got - plain) > 1e-4
