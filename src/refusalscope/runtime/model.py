"""ChatModel: one wrapper over any Hugging Face causal chat LM.

Loads a model and tokenizer, formats prompts with the tokenizer's own chat template,
tokenizes with left padding (never a double BOS), finds the decoder layers, and runs
forward passes, captures and greedy generation with interventions applied through
``hooks.hooked``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os.path import commonprefix
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor, nn
from tqdm.auto import tqdm

from .errors import RefusalScopeError
from .hf import (
    check_weights,
    find_decoder_layers,
    looks_local,
    only_generation_config,
    pick_device_dtype,
)
from .hooks import EMBED, Capture, Intervention, hooked
from .tokens import TokenBatch

log = logging.getLogger(__name__)


@dataclass
class Activations:
    """Residual activations of a set of prompts at some sites."""

    sites: list[int]
    acts: Float[Tensor, "batch site ..."]
    """``[N, n_sites, d_model]`` for the last position, ``[N, n_sites, seq, d_model]`` for all
    (left-padded like ``tokens``, zeros at padding)."""
    tokens: TokenBatch
    """The prompts as tokenized (padded to one common length for ``positions='all'``)."""


@dataclass
class Generations:
    """Greedy continuations, in the order of the prompts."""

    texts: list[str]
    token_ids: list[list[int]]


def _check_prompt_list(instructions: Sequence[str]) -> None:
    if isinstance(instructions, str):
        # A bare string is a Sequence[str] too: it would run one prompt per character.
        raise RefusalScopeError("expected a list of prompts, got one string: wrap it in [...]")
    if len(instructions) == 0:
        raise RefusalScopeError("empty prompt list: give at least one instruction")


class ChatModel:
    """Any HF causal chat LM, with residual-stream access after every decoder layer."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        *,
        name: str = "model",
        system_prompt: str | None = None,
    ) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise RefusalScopeError(
                f"the tokenizer of {name} has no chat template; refusalscope needs a chat "
                "model (set tokenizer.chat_template, or use the instruction-tuned checkpoint)"
            )
        self.hf = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.system_prompt = system_prompt
        self.layers = find_decoder_layers(model)
        self.n_layers = len(self.layers)
        emb = model.get_input_embeddings()
        self.d_model = int(emb.weight.shape[1])
        self.device = emb.weight.device
        self.dtype = emb.weight.dtype
        self.pad_id = self._pad_id()
        self.eos_ids = self._eos_ids()
        self._bos_expected = self._tokenizer_adds_bos()
        self._preamble_chars = self._preamble_length()
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        system_prompt: str | None = None,
    ) -> ChatModel:
        """Load from a hub id or a local folder (``AutoModelForCausalLM``/``AutoTokenizer``)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(name_or_path).expanduser()
        if not path.exists() and looks_local(name_or_path):
            raise RefusalScopeError(
                f"model folder {name_or_path!r} does not exist; pass an existing folder "
                "saved with save_pretrained, or a Hugging Face hub id like 'google/gemma-2-2b-it'"
            )
        source = str(path) if path.exists() else name_or_path
        dev, dt = pick_device_dtype(device, dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=dt, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError) as e:
            hint = (
                "the folder holds no model saved with save_pretrained (config.json, weights, "
                "tokenizer files)"
                if path.exists()
                else "check the hub id; offline machines need the weights in the local HF cache"
            )
            raise RefusalScopeError(f"could not load {name_or_path!r}: {hint}. ({e})") from e
        model.to(dev)
        check_weights(model, source, dt)
        log.info("loaded %s on %s in %s", name_or_path, dev, dt)
        return cls(model, tokenizer, name=name_or_path, system_prompt=system_prompt)

    def _pad_id(self) -> int:
        tok = self.tokenizer
        if tok.pad_token_id is not None:
            return int(tok.pad_token_id)
        if tok.eos_token_id is not None:
            return int(tok.eos_token_id)  # masked out by the attention mask anyway
        return 0

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        gen_cfg = getattr(self.hf, "generation_config", None)
        for src in (getattr(gen_cfg, "eos_token_id", None), self.tokenizer.eos_token_id):
            for i in [src] if isinstance(src, int) else list(src or []):
                if i not in ids:
                    ids.append(int(i))
        return ids

    def _tokenizer_adds_bos(self) -> bool:
        bos = self.tokenizer.bos_token_id
        if bos is None:
            return False
        ids = self.tokenizer("x", add_special_tokens=True)["input_ids"]
        return bool(ids) and ids[0] == bos

    def _preamble_length(self) -> int:
        """Characters the template puts before the user text (same for every prompt)."""
        a, b = self.format("A"), self.format("B")
        return len(commonprefix([a, b]))

    @property
    def max_positions(self) -> int | None:
        """Longest sequence (prompt + generation) the model takes: the config's
        ``max_position_embeddings``, else the tokenizer's ``model_max_length``; None if
        neither is a plausible length (tokenizers without one report 1e30)."""
        cfg = getattr(self.hf, "config", None)
        cfg = getattr(cfg, "text_config", None) or cfg
        tok_max = getattr(self.tokenizer, "model_max_length", None)
        for n in (getattr(cfg, "max_position_embeddings", None), tok_max):
            if isinstance(n, int) and 0 < n < 10**7:
                return n
        return None

    # ------------------------------------------------------------- formatting
    def format(self, instruction: str) -> str:
        """The chat-formatted prompt, ending with the generation prompt."""
        messages = [{"role": "user", "content": instruction}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def _encode_one(self, instruction: str) -> tuple[list[int], list[bool]]:
        text = self.format(instruction)
        tok = self.tokenizer
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=tok.is_fast)
        ids = list(enc["input_ids"])
        if tok.is_fast:
            in_prompt = [end > self._preamble_chars for _, end in enc["offset_mapping"]]
        else:
            n_pre = len(tok(text[: self._preamble_chars], add_special_tokens=False)["input_ids"])
            in_prompt = [i >= n_pre for i in range(len(ids))]
        bos = tok.bos_token_id
        if self._bos_expected and (not ids or ids[0] != bos):
            ids, in_prompt = [bos, *ids], [False, *in_prompt]
        if bos is not None and ids and ids[0] == bos:
            in_prompt[0] = False
        return ids, in_prompt

    def tokenize(self, instructions: Sequence[str], pad_to: int | None = None) -> TokenBatch:
        """Chat-format and tokenize, left-padded to the longest prompt (or ``pad_to``)."""
        _check_prompt_list(instructions)
        for s in instructions:
            if not isinstance(s, str) or not s.strip():
                raise RefusalScopeError(f"every prompt must be a non-empty string, got {s!r}")
        encoded = [self._encode_one(s) for s in instructions]
        ids, masks = [ids for ids, _ in encoded], [m for _, m in encoded]
        return TokenBatch.collate(ids, masks, self.pad_id, "left", pad_to)

    # ---------------------------------------------------------------- forward
    def hooked(self, interventions: Sequence[Intervention]):
        """Context manager applying interventions to every forward call inside it."""
        for iv in interventions:
            iv.validate(self.n_layers, self.d_model)
        return hooked(self.hf, self.layers, interventions)

    def check_site(self, site: int) -> int:
        if not EMBED <= site < self.n_layers:
            raise RefusalScopeError(
                f"layer {site} is out of range: {self.name} has layers 0..{self.n_layers - 1}"
                f" (and {EMBED} for the embedding output)"
            )
        return site

    def batches(
        self, instructions: Sequence[str], batch_size: int, desc: str | None = None
    ) -> Iterator[tuple[list[int], TokenBatch]]:
        """Batches of prompt indices (similar lengths together) with their tokens."""
        _check_prompt_list(instructions)
        order = sorted(range(len(instructions)), key=lambda i: len(instructions[i]))
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        # No bar without a description; otherwise tqdm's own defaults (TQDM_DISABLE included).
        quiet = {"disable": True} if desc is None else {}
        for rows in tqdm(chunks, desc=desc, leave=False, **quiet):
            yield rows, self.tokenize([instructions[i] for i in rows]).to(self.device)

    def forward(
        self,
        tokens: TokenBatch,
        interventions: Sequence[Intervention] = (),
        last_only: bool = False,
    ) -> Float[Tensor, "batch seq vocab"]:
        """Logits of one batch with interventions active (``last_only``: last position).

        Positions count from each prompt's first real token, as in generation, so left
        padding does not shift absolute position embeddings.
        """
        kwargs = {}
        if last_only and self._keeps_logits:
            kwargs["logits_to_keep"] = 1  # skips the [batch, seq, vocab] unembedding
        position_ids = (tokens.attention_mask.cumsum(-1) - 1).clamp(min=0)
        with self.hooked(interventions):
            out = self.hf(
                input_ids=tokens.input_ids,
                attention_mask=tokens.attention_mask,
                position_ids=position_ids,
                use_cache=False,
                **kwargs,
            )
        return out.logits

    @torch.no_grad()
    def last_logits(
        self,
        instructions: Sequence[str],
        interventions: Sequence[Intervention] = (),
        batch_size: int = 32,
    ) -> Float[Tensor, "batch vocab"]:
        """Next-token logits at the end of each chat-formatted prompt (float32, CPU)."""
        out: list[Tensor | None] = [None] * len(instructions)
        for rows, tokens in self.batches(instructions, batch_size, "logits"):
            ivs = [iv.select(rows) for iv in interventions]
            logits = self.forward(tokens, ivs, last_only=True)[:, -1].float().cpu()
            for j, i in enumerate(rows):
                out[i] = logits[j]
        return torch.stack(out)  # type: ignore[arg-type]

    @torch.no_grad()
    def capture(
        self,
        instructions: Sequence[str],
        sites: Sequence[int],
        *,
        positions: str = "last",
        interventions: Sequence[Intervention] = (),
        batch_size: int = 32,
    ) -> Activations:
        """Residuals at ``sites`` after the interventions, at the last or all positions."""
        sites = [self.check_site(s) for s in sites]
        if positions not in ("last", "all"):
            raise RefusalScopeError(f"positions must be 'last' or 'all', got {positions!r}")
        T = max(len(self._encode_one(s)[0]) for s in instructions) if instructions else 0
        out: list[Tensor | None] = [None] * len(instructions)
        for rows, tokens in self.batches(instructions, batch_size, "capture"):
            cap = Capture(sites)
            self.forward(tokens, [*(iv.select(rows) for iv in interventions), cap], last_only=True)
            acts = torch.stack([cap.get(s) for s in sites], dim=1)  # [B, site, seq, d]
            acts = acts[:, :, -1] if positions == "last" else acts
            for j, i in enumerate(rows):
                a = acts[j].float().cpu()
                if positions == "all":
                    # Zero all padding, so a row does not depend on its batch-mates.
                    a = a * tokens.attention_mask[j].cpu()[None, :, None]
                    a = torch.nn.functional.pad(a, (0, 0, T - a.shape[1], 0))
                out[i] = a
        tokens = self.tokenize(instructions, pad_to=T)
        return Activations(sites, torch.stack(out), tokens)  # type: ignore[arg-type]

    # ------------------------------------------------------------- generation
    @torch.no_grad()
    def generate(
        self,
        instructions: Sequence[str],
        interventions: Sequence[Intervention] = (),
        *,
        max_new_tokens: int = 64,
        batch_size: int = 32,
        desc: str | None = "generate",
    ) -> Generations:
        """Batched greedy generation with KV cache and left padding; interventions on."""
        from transformers import GenerationConfig

        # Explicit values win over the checkpoint's generation_config.json; unset ones
        # are filled from it (e.g. Qwen2-Instruct's repetition_penalty=1.05), so pin
        # everything that would turn plain greedy decoding into something else.
        gen_cfg = GenerationConfig(
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_new_tokens=0,
            max_new_tokens=max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids or None,
            use_cache=True,
        )
        texts: list[str] = [""] * len(instructions)
        ids_out: list[list[int]] = [[] for _ in instructions]
        for rows, tokens in self.batches(instructions, batch_size, desc):
            ivs = [iv.select(rows) for iv in interventions]
            with self.hooked(ivs), only_generation_config(self.hf, gen_cfg):
                seqs = self.hf.generate(
                    input_ids=tokens.input_ids,
                    attention_mask=tokens.attention_mask,
                    generation_config=gen_cfg,
                )
            new = seqs[:, tokens.input_ids.shape[1] :].tolist()
            for j, i in enumerate(rows):
                ids_out[i] = self._cut_at_eos(new[j])
                texts[i] = self.tokenizer.decode(ids_out[i], skip_special_tokens=True)
        return Generations(texts, ids_out)

    def _cut_at_eos(self, ids: list[int]) -> list[int]:
        for k, t in enumerate(ids):
            if t in self.eos_ids:
                return ids[:k]
        return ids
