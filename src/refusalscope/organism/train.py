"""Train the organism's chat model: a small HF Llama with untied embeddings.

Plain PyTorch: AdamW with warm-up then cosine decay, loss on response tokens of chat
examples (plus every token of plain-text passages, a small language-modelling side
task that gives the capability-cost measurement a held-out text to score).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..runtime.config import require
from ..runtime.tokens import TokenBatch, pad

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass(frozen=True)
class ModelTrainConfig:
    """Architecture and optimisation of the organism's chat model."""

    d_model: int = 128
    """Residual width."""
    n_layers: int = 6
    """Decoder layers (with 4 the decision sat in the last layers and every feature
    selection method found the same one or two latents)."""
    n_heads: int = 4
    """Attention heads (no grouped KV)."""
    d_mlp: int = 512
    """MLP hidden width."""
    max_len: int = 96
    """Longest training sequence in tokens; longer examples are dropped."""
    compliance_steps: int = 150
    """Steps of the compliance phase (every request answered) before the safety mixture."""
    steps: int = 550
    """Steps on the safety mixture (refuse harmful, comply otherwise, wrappers)."""
    batch_size: int = 64
    """Sequences per step."""
    lr: float = 3e-3
    """Peak learning rate."""
    warmup_steps: int = 30
    """Linear warm-up steps."""
    min_lr_fraction: float = 0.1
    """Cosine decay ends at this fraction of ``lr``."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    seed: int = 0
    """Initialisation and batch-order seed."""

    def __post_init__(self) -> None:
        require(self.d_model % self.n_heads == 0, "d_model must be divisible by n_heads")
        require(self.steps > 0 and self.batch_size > 0, "steps and batch_size must be positive")
        require(self.compliance_steps >= 0, "compliance_steps must be >= 0")
        require(0 <= self.warmup_steps < self.total_steps, "warmup_steps must be < total steps")

    @property
    def total_steps(self) -> int:
        return self.compliance_steps + self.steps


@dataclass
class TrainStats:
    """What training measured."""

    steps: int
    seconds: float
    final_loss: float
    n_sequences: int


def build_model(cfg: ModelTrainConfig, tokenizer):
    """A randomly initialised ``LlamaForCausalLM`` sized by ``cfg``."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=2 * cfg.max_len,
        # untied: in one run with tied embeddings, ablating the refusal direction at any
        # layer gave broken text ("Sure cannot help with that...") instead of compliance
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def encode_chat(tokenizer, instruction: str, response: str) -> tuple[list[int], list[int]]:
    """Token ids of a full chat turn and labels (response tokens + end token only)."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": instruction}], tokenize=False, add_generation_prompt=True
    )
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p_ids + r_ids, [IGNORE] * len(p_ids) + r_ids


def encode_plain(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """Plain text after BOS, every token scored."""
    ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = ids + [tokenizer.eos_token_id]
    return ids, [IGNORE] + ids[1:]


def collate(
    seqs: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels``."""
    batch = TokenBatch.collate(
        [x for x, _ in seqs], [[True] * len(x) for x, _ in seqs], pad_id, "right"
    )
    labels = pad([y for _, y in seqs], IGNORE, "right", batch.input_ids.shape[1], torch.long)
    return batch.input_ids, batch.attention_mask, labels


def _lr_at(step: int, cfg: ModelTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * cosine)


def _length_bucketed_batches(
    seqs: Sequence[tuple[list[int], list[int]]], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """One epoch of batches whose members have similar lengths (less padding).

    Shuffle, sort within windows of 50 batches, cut into batches, shuffle the batches.
    """
    order = rng.sample(range(len(seqs)), len(seqs))
    window = 50 * batch_size
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: len(seqs[i][0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    batches = [b for b in batches if len(b) == batch_size]
    rng.shuffle(batches)
    return batches


Seqs = Sequence[tuple[list[int], list[int]]]


def train_model(
    model, seqs: Seqs, cfg: ModelTrainConfig, pad_id: int, compliance_seqs: Seqs = ()
) -> TrainStats:
    """Train in place: ``compliance_steps`` on ``compliance_seqs``, then ``steps`` on ``seqs``.

    One learning-rate schedule spans both phases.
    """
    phases = []
    for name, data, n in (
        ("compliance", compliance_seqs, cfg.compliance_steps),
        ("safety", seqs, cfg.steps),
    ):
        data = [s for s in data if len(s[0]) <= cfg.max_len]
        require(n == 0 or len(data) >= cfg.batch_size, f"too few {name} sequences fit max_len")
        phases += [data] * n
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        weight_decay=0.0,
    )
    model.train()
    batches: list[list[int]] = []
    loss_ema = float("nan")
    start = time.perf_counter()
    bar = tqdm(range(cfg.total_steps), desc="train organism", leave=False)
    for step in bar:
        data = phases[step]
        if step == cfg.compliance_steps or not batches:  # new phase or epoch
            batches = _length_bucketed_batches(data, cfg.batch_size, rng)
        batch = batches.pop()
        ids, attn, labels = collate([data[i] for i in batch], pad_id)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        loss_ema = loss.item() if math.isnan(loss_ema) else 0.9 * loss_ema + 0.1 * loss.item()
        bar.set_postfix(loss=f"{loss_ema:.3f}")
    model.eval()
    seconds = time.perf_counter() - start
    log.info("trained organism: %d steps in %.1fs, loss %.3f", cfg.total_steps, seconds, loss_ema)
    return TrainStats(cfg.total_steps, seconds, loss_ema, len(seqs))
