"""A Hugging Face causal LM read as a two-way classifier, and the judge built on it.

The classifiers answer with one token ("Yes"/"No", "unsafe"/"safe"). Instead of
generating it, the next-token logits of the two answers are read at the end of the
prompt: the greedy answer is the larger of the two, and ``P(first) = softmax`` over the
pair is a score the pipeline keeps. The answers' token ids are found by tokenizing the
prompt followed by each answer text, exactly as the model would emit it there (so a
SentencePiece "▁Yes" is not mistaken for the "Yes" that follows ``[/INST]``); tokens both
answers share (Llama Guard 3's leading ``"\\n\\n"``) are appended to the prompt, and what
is left must be one token per answer.

Weights load on first use and ``close()`` frees them: the pipeline frees the studied
model, then loads each judge in turn and closes it before the next.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch

from ..runtime.errors import RefusalScopeError
from ..runtime.hf import check_weights, looks_local, pick_device_dtype
from ..runtime.types import Prompt
from .base import Judge, Verdict, pair_up
from .config import HFJudgeConfig

log = logging.getLogger(__name__)


class TwoWayScores(NamedTuple):
    """The classifier's reading of each prompt."""

    p_first: list[float]
    """Softmax over the two answers' logits: P(first answer)."""
    first: list[bool]
    """Whether the first answer's logit is the larger (ties go to the second)."""
    elsewhere: list[bool]
    """Whether the model's top next token is neither answer (greedy decoding would have
    written something else; HarmBench's own code labels those -1)."""


class Encoded(NamedTuple):
    """One prompt ready to score: its ids (with any tokens shared by both answers) and
    the token id of each answer that follows them."""

    ids: list[int]
    answer_ids: tuple[int, int]


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


class HFClassifier:
    """A causal LM loaded lazily from ``cfg`` and read by its next-token logits."""

    def __init__(self, cfg: HFJudgeConfig, what: str = "judge") -> None:
        self.cfg = cfg
        self.what = what
        self._model: Any = None
        self._tokenizer: Any = None
        self._device: torch.device | None = None

    # ---------------------------------------------------------------- loading
    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    def load(self) -> None:
        """Load tokenizer and weights unless already loaded."""
        if self._model is not None:
            return
        cfg = self.cfg
        if cfg.load_in_8bit and not bitsandbytes_available():
            raise RefusalScopeError(
                f"{self.what}: load_in_8bit needs the bitsandbytes package, which is not "
                "installed; pip install bitsandbytes, or set load_in_8bit = false"
            )
        source = self._source()
        device, dtype = pick_device_dtype(cfg.device, cfg.dtype)
        tokenizer, model = self._from_pretrained(source, device, dtype)
        # Left padding keeps every prompt's last token in the last column, where the
        # answer is read; HarmBench cuts responses on the right.
        tokenizer.padding_side = "left"
        tokenizer.truncation_side = "right"
        model.eval()
        check_weights(model, source, dtype)
        self._tokenizer, self._model, self._device = tokenizer, model, device
        log.info(
            "%s: loaded %s on %s in %s%s",
            self.what,
            cfg.model,
            device,
            cfg.dtype,
            " (8-bit)" if cfg.load_in_8bit else "",
        )

    def _source(self) -> str:
        path = Path(self.cfg.model).expanduser()
        if path.exists():
            return str(path)
        if looks_local(self.cfg.model):
            raise RefusalScopeError(
                f"{self.what}: model folder {self.cfg.model!r} does not exist; give an "
                "existing folder saved with save_pretrained, or a hub id like "
                "'cais/HarmBench-Llama-2-13b-cls'"
            )
        return self.cfg.model

    def _from_pretrained(self, source: str, device: torch.device, dtype: torch.dtype):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cfg = self.cfg
        common = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code}
        extra: dict[str, Any] = {}
        if cfg.load_in_8bit:
            from transformers import BitsAndBytesConfig

            extra = {
                "quantization_config": BitsAndBytesConfig(load_in_8bit=True),
                "device_map": {"": str(device)},
            }
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **common)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **common, **extra)
        except (OSError, ValueError) as e:
            hint = (
                "the folder holds no model saved with save_pretrained (config.json, "
                "weights, tokenizer files)"
                if Path(source).exists()
                else "check the hub id and revision; gated checkpoints (Llama Guard) need "
                "their licence accepted and HF_TOKEN set; offline machines need the "
                "weights in the local HF cache"
            )
            raise RefusalScopeError(
                f"{self.what}: could not load {cfg.model!r}: {hint}. ({e})"
            ) from e
        if not cfg.load_in_8bit:  # quantised weights were placed by device_map
            model.to(device)
        return tokenizer, model

    def close(self) -> None:
        """Drop the weights and return their GPU memory (a later call loads them again)."""
        self._model = None
        self._tokenizer = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------- tokenizing
    def clip(self, text: str) -> str:
        """``text`` cut to ``max_response_tokens`` classifier tokens, the way HarmBench's
        ``evaluate_completions.py`` does it (encode with special tokens and right
        truncation, decode without them), so every response goes through it."""
        tok = self.tokenizer
        ids = tok.encode(text, max_length=self.cfg.max_response_tokens, truncation=True)
        return tok.decode(ids, skip_special_tokens=True)

    def encode(self, text: str, answers: tuple[str, str], add_bos: bool) -> Encoded:
        """``text`` as ids (BOS first when ``add_bos`` and the tokenizer uses one), plus
        the single token each of ``answers`` starts with right after it."""
        tok = self.tokenizer
        base = tok(text, add_special_tokens=False)["input_ids"]
        tails = []
        for answer in answers:
            full = tok(text + answer, add_special_tokens=False)["input_ids"]
            if full[: len(base)] != base:
                raise RefusalScopeError(
                    f"{self.what}: appending the answer {answer!r} changes how the end of "
                    f"the prompt is tokenized ({tok.convert_ids_to_tokens(base[-3:])} -> "
                    f"{tok.convert_ids_to_tokens(full[len(base) - 3 :])}); this tokenizer "
                    "does not fit the judge's prompt format"
                )
            tails.append(full[len(base) :])
        shared = _common_prefix(tails[0], tails[1])
        rest = [t[len(shared) :] for t in tails]
        for answer, r in zip(answers, rest, strict=True):
            if len(r) != 1:
                pieces = tok.convert_ids_to_tokens(r)
                raise RefusalScopeError(
                    f"{self.what}: the answer {answer!r} is {len(r)} tokens {pieces} after "
                    f"the prompt, not one; {self.cfg.model!r} does not look like the "
                    "classifier this judge reads (a wrong tokenizer or checkpoint?)"
                )
        bos = [tok.bos_token_id] if add_bos and self._adds_bos() else []
        return Encoded(bos + base + shared, (rest[0][0], rest[1][0]))

    def _adds_bos(self) -> bool:
        tok = self._tokenizer
        if tok.bos_token_id is None:
            return False
        ids = tok("x", add_special_tokens=True)["input_ids"]
        return bool(ids) and ids[0] == tok.bos_token_id

    # ---------------------------------------------------------------- scoring
    def score(self, encoded: Sequence[Encoded]) -> TwoWayScores:
        """Read the two answers' logits after each prompt, ``batch_size`` prompts at a
        time (sorted by length, so little padding)."""
        p: list[float] = [0.0] * len(encoded)
        first = [False] * len(encoded)
        elsewhere = [False] * len(encoded)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
        size = self.cfg.batch_size
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            logits = self._last_logits([encoded[i].ids for i in batch])
            for row, i in enumerate(batch):
                a, b = encoded[i].answer_ids
                pair = torch.stack([logits[row, a], logits[row, b]])
                p[i] = float(torch.softmax(pair, dim=0)[0])
                first[i] = bool(pair[0] > pair[1])
                elsewhere[i] = int(logits[row].argmax()) not in (a, b)
        return TwoWayScores(p, first, elsewhere)

    @torch.inference_mode()
    def _last_logits(self, rows: list[list[int]]) -> torch.Tensor:
        """Float32 next-token logits after each row of ids: [batch, vocab]."""
        model, tok = self.model, self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad if pad is not None else 0, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        # Positions count real tokens only, so a padded prompt is read as if alone.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {}
        if "logits_to_keep" in inspect.signature(model.forward).parameters:
            kwargs["logits_to_keep"] = 1  # skips the [batch, seq, vocab] unembedding
        out = model(
            input_ids=ids.to(self._device),
            attention_mask=mask.to(self._device),
            position_ids=position_ids.to(self._device),
            use_cache=False,
            **kwargs,
        )
        return out.logits[:, -1, :].float().cpu()


def _common_prefix(a: list[int], b: list[int]) -> list[int]:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


class HFJudge(Judge):
    """A judge that asks a classifier one question per (prompt, response) and reads a
    two-way answer. Subclasses set the answers and build the classifier's prompt.

    ``scores`` holds P(first answer) for each pair of the last ``judge`` call.
    """

    answers: ClassVar[tuple[str, str]]
    """The two answers as the model writes them; the first means "complied"."""
    add_bos: ClassVar[bool] = True
    """Whether the prompt text still needs the tokenizer's BOS (False when a chat
    template has written it)."""

    def __init__(self, cfg: HFJudgeConfig) -> None:
        self.cfg = cfg
        self.classifier = HFClassifier(cfg, what=f"judge {self.name!r}")
        self.scores: list[float] = []

    @abstractmethod
    def build(self, prompt: Prompt, response: str) -> str:
        """The classifier's input text for one pair (``response`` already clipped)."""

    def answers_for(self, text: str) -> tuple[str, str]:
        """The answer texts that follow ``text``; the class's ``answers`` by default."""
        return self.answers

    def judge(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        pairs = pair_up(prompts, responses)
        if not pairs:
            self.scores = []
            return []
        clf = self.classifier
        texts = [self.build(p, clf.clip(r)) for p, r in pairs]
        encoded = [clf.encode(t, self.answers_for(t), self.add_bos) for t in texts]
        result = clf.score(encoded)
        off = sum(result.elsewhere)
        if off:
            log.warning(
                "judge %s: on %d of %d responses the classifier's top next token was "
                "neither %r nor %r; judged by the larger of the two",
                self.name,
                off,
                len(texts),
                *self.answers,
            )
        self.scores = result.p_first
        return ["complied" if yes else "refused" for yes in result.first]

    def close(self) -> None:
        """Free the classifier's weights (loaded again on the next ``judge`` call)."""
        self.classifier.close()
