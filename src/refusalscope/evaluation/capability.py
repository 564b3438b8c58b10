"""The capability cost of each method's global edit: CE on the base model's own responses
to harmless prompts and on held-out plain text, and the judge's complied rate."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from ..judges import Judge
from ..runtime.hooks import Intervention
from ..runtime.model import ChatModel
from ..runtime.tokens import TokenBatch
from ..runtime.types import Prompt
from .config import EvalConfig
from .generate import EvalResult, generate_and_judge
from .steering import Steering

log = logging.getLogger(__name__)


class CapabilityResult(EvalResult):
    """``table[method]``: ``ce_responses``, ``ce_text`` (None without texts) and
    ``harmless_complied``; rows: the judged generations on harmless prompts."""


@torch.no_grad()
def ce_per_token(
    model: ChatModel,
    sequences: Sequence[tuple[list[int], int]],
    interventions: Sequence[Intervention] = (),
    batch_size: int = 32,
) -> float:
    """Mean cross-entropy per scored token; each sequence scores tokens from ``start``.

    Teacher-forced, right-padded (positions need no shift), interventions at every position.
    """
    total, count = 0.0, 0
    for i in range(0, len(sequences), batch_size):
        chunk = sequences[i : i + batch_size]
        seqs = [seq for seq, _ in chunk]
        scored_rows = [[i >= max(start, 1) for i in range(len(seq))] for seq, start in chunk]
        batch = TokenBatch.collate(seqs, scored_rows, model.pad_id, "right")
        ids, attn, scored = batch.input_ids, batch.attention_mask, batch.prompt_mask
        ids, attn = ids.to(model.device), attn.to(model.device)
        with model.hooked(interventions):
            logits = model.hf(input_ids=ids, attention_mask=attn, use_cache=False).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        nll = -logp.gather(-1, ids[:, 1:, None])[..., 0]
        mask = scored[:, 1:].to(nll.device)
        total += float(nll[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1)


def response_sequences(
    model: ChatModel, prompts: Sequence[str], responses: Sequence[list[int]]
) -> list[tuple[list[int], int]]:
    """Chat prompt + the base model's response (+ EOS), scored on the response."""
    out = []
    eos = model.eos_ids[:1]
    for p, r in zip(prompts, responses, strict=True):
        ids = model.tokenize([p]).input_ids[0].tolist()
        out.append((ids + list(r) + eos, len(ids)))
    return out


def text_sequences(model: ChatModel, texts: Sequence[str]) -> list[tuple[list[int], int]]:
    """Plain text (BOS when the tokenizer uses one), every token after the first scored."""
    out = []
    for t in texts:
        ids = model.tokenizer(t, add_special_tokens=True)["input_ids"]
        out.append((list(ids), 1))
    return out


def compute_capability(
    model: ChatModel,
    steer: Steering,
    methods: Sequence[str],
    harmless: Sequence[Prompt],
    texts: Sequence[str],
    judge: Judge,
    cfg: EvalConfig,
) -> CapabilityResult:
    """Per method: CE on the base model's responses (``ce_responses``), CE on plain text
    (``ce_text``; None without texts) and the judge's complied rate on the harmless prompts
    (``harmless_complied``; with the organism judge that needs the right object named)."""
    harmless = list(harmless)[: cfg.n_capability]
    instr = [p.instruction for p in harmless]
    base = model.generate(instr, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    resp_seqs = response_sequences(model, instr, base.token_ids)
    texts = list(texts)[: cfg.n_capability]
    text_seqs = text_sequences(model, texts)
    table, rows = {}, []
    for method in methods:
        ivs = steer.global_(method)
        judged = generate_and_judge(
            model, harmless, ivs, judge, cfg, {"eval": "capability", "method": method}
        )
        table[method] = {
            "ce_responses": ce_per_token(model, resp_seqs, ivs, cfg.batch_size),
            "ce_text": ce_per_token(model, text_seqs, ivs, cfg.batch_size) if texts else None,
            "harmless_complied": judged.summary["complied"],
        }
        rows += judged.rows
        log.info("capability %s: %s", method, table[method])
    return CapabilityResult(table, rows)
