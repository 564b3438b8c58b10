"""Capability benchmarks (lm-evaluation-harness tasks) under each method's interventions.

``ChatModelLM`` is an lm-eval ``TemplateLM`` over a ChatModel and prompt-independent
interventions, after lm-eval's ``HFLM`` (EleutherAI/lm-evaluation-harness,
lm_eval/models/huggingface.py). As in the capability stage, ``loglikelihood(_rolling)`` is
one forward pass under ``ChatModel.hooked`` (every position, ``positions="prompt"`` edits
too, as ``ce_per_token``) and ``generate_until`` is greedy ``generate`` under the same hooks
(``positions="prompt"``: prefill only). lm-eval is optional: ``pip install 'refusalscope[eval]'``.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from ..runtime.cache import versions
from ..runtime.config import require, to_dict
from ..runtime.errors import RefusalScopeError
from ..runtime.files import read_json, read_jsonl, write_json, write_jsonl
from ..runtime.hf import only_generation_config
from ..runtime.hooks import Intervention
from ..runtime.model import ChatModel
from ..runtime.tokens import TokenBatch

log = logging.getLogger(__name__)

DEFAULT_TASKS = ("gsm8k", "arc_challenge")
"""Grade-school maths (generative, 5-shot) and ARC-Challenge (multiple choice)."""


def require_lm_eval():
    """The ``lm_eval`` package, or one error saying how to install it."""
    try:
        import lm_eval
        import lm_eval.api.model  # noqa: F401  (the LM base classes)
    except ImportError as e:
        msg = "lm-evaluation-harness is not installed: pip install 'refusalscope[eval]'"
        raise RefusalScopeError(msg) from e
    return lm_eval


def check_prompt_independent(method: str, interventions: Sequence[Intervention]) -> None:
    """lm-eval requests carry no prompt index, so per-prompt interventions cannot apply."""
    for iv in interventions:
        if iv.select([0, 1]) is not iv:
            raise RefusalScopeError(
                f"method {method!r} has a per-prompt {type(iv).__name__}; lm-eval tasks need "
                "prompt-independent interventions, e.g. Steering.global_(method)"
            )


class _ChatModelLMMethods:
    """The methods of ``ChatModelLM``; mixed into lm-eval's ``TemplateLM`` at first use."""

    backend = "causal"

    def __init__(
        self,
        model: ChatModel,
        interventions: Sequence[Intervention] = (),
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        max_gen_toks: int = 256,
    ) -> None:
        """``max_length``: longest input (default: the model's ``max_positions``, else
        2048); ``max_gen_toks``: generation budget of tasks that set none."""
        super().__init__()
        check_prompt_independent("(model)", interventions)  # validated by ChatModel.hooked
        self.model = model
        self.interventions = list(interventions)
        self.tokenizer = model.tokenizer
        self.batch_size = batch_size
        self.max_length = max_length or model.max_positions or 2048  # HFLM's default
        self.max_gen_toks = max_gen_toks
        self._device = model.device
        bos = model.tokenizer.bos_token_id
        self._adds_bos = bos is not None and model.tokenizer("x")["input_ids"][:1] == [bos]

    # ---------------------------------------------------------------- tokens
    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id  # as HFLM: for chat models, the end of a turn
        return int(eos) if eos is not None else (self.model.eos_ids or [self.model.pad_id])[0]

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return self.eot_token_id if bos is None else int(bos)

    @property
    def tokenizer_name(self) -> str:
        return self.model.name.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kw) -> list[int]:
        """Token ids; a BOS only where the tokenizer adds one and the text has none (chat
        templates that write the BOS into the text would otherwise get two)."""
        ids = list(self.tokenizer(string, add_special_tokens=False)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if add_special_tokens is not False and self._adds_bos and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt=True) -> str:
        """The model's own template, with its system prompt when the history has none."""
        messages = list(chat_history)
        system = self.model.system_prompt
        if system is not None and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
        # No generation prompt: lm-eval is prefilling the assistant turn, left open.
        prefill = dict(continue_final_message=not add_generation_prompt)
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **prefill
        )

    # --------------------------------------------------------------- scoring
    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        """(sum of continuation log-probs, whether greedy decoding gives the continuation)."""
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1] + requests[i][2]))
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for rows in chunks:
            scores = self._score_batch([requests[i] for i in rows])
            for i, score in zip(rows, scores, strict=True):
                out[i] = score
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], score)
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _score_batch(self, chunk: list[tuple[Any, list[int], list[int]]]):
        # The last token is only predicted; sequences over max_length lose their oldest
        # context tokens, as in HFLM.
        seqs = [(ctx + cont)[-(self.max_length + 1) :][:-1] for _, ctx, cont in chunk]
        # Right padding: every row starts at position 0, so no position shift is needed.
        batch = TokenBatch.collate(
            seqs, [[True] * len(s) for s in seqs], self.model.pad_id, "right"
        )
        logits = self.model.forward(batch.to(self.model.device), self.interventions)
        out = []
        for j, (seq, (_, _, cont)) in enumerate(zip(seqs, chunk, strict=True)):
            n, k = len(seq), len(cont)
            logp = torch.log_softmax(logits[j, n - k : n].float(), dim=-1)
            target = torch.tensor(cont, device=logp.device, dtype=torch.long)
            ll = logp.gather(-1, target[:, None]).sum()
            out.append((float(ll), bool((logp.argmax(-1) == target).all())))
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts after the prefix token, in disjoint windows of at
        most ``max_length`` tokens that each keep as much context as fits."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows, owner = [], []
        for i, req in enumerate(requests):
            ids = self.tok_encode(req.args[0], add_special_tokens=False)
            pairs = get_rolling_token_windows(ids, self.prefix_token_id, self.max_length, 1)
            windows += [(None, *make_disjoint_window(pair)) for pair in pairs]
            owner += [i] * (len(windows) - len(owner))
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owner, self._loglikelihood_tokens(windows), strict=True):
            totals[i] += ll
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations cut at the first stop string, batched per gen_kwargs."""
        from lm_eval.models.utils import Collator

        args = [req.args for req in requests]
        # Longest first, one batch per distinct gen_kwargs (HFLM's grouping).
        collator = Collator(
            args, lambda a: (-len(self.tok_encode(a[0])), a[0]), lambda a: a[1], "gen_kwargs"
        )
        out: list[str] = []
        for chunk in collator.get_batched(n=self.batch_size):
            contexts, gen_kwargs = zip(*chunk, strict=True)
            texts = self._generate_batch(list(contexts), dict(gen_kwargs[0]))
            for context, text in zip(contexts, texts, strict=True):
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs[0]), text)
            out += texts
        return collator.get_original(out)

    @torch.no_grad()
    def _generate_batch(self, contexts: list[str], gen_kwargs: dict) -> list[str]:
        from lm_eval.models import utils as lm_utils
        from lm_eval.models.utils_hf import stop_sequences_criteria

        kwargs = lm_utils.normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
        if kwargs.get("do_sample"):
            msg = f"a task samples ({gen_kwargs}); only greedy tasks (do_sample: false) run"
            raise RefusalScopeError(msg)
        eos = self.tokenizer.decode([self.eot_token_id])
        until = lm_utils.handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        max_new = int(kwargs.pop("max_gen_toks"))
        require(max_new < self.max_length, f"max_gen_toks {max_new} must be < {self.max_length}")
        ids = [self.tok_encode(c)[-(self.max_length - max_new) :] for c in contexts]
        batch = TokenBatch.collate(ids, [[True] * len(i) for i in ids], self.model.pad_id, "left")
        batch = batch.to(self.model.device)
        gen_cfg = self._greedy_config(max_new)
        width = batch.input_ids.shape[1]
        stopping = stop_sequences_criteria(self.tokenizer, until, width, len(ids))
        with self.model.hooked(self.interventions), only_generation_config(self.model.hf, gen_cfg):
            seqs = self.model.hf.generate(
                batch.input_ids, attention_mask=batch.attention_mask, stopping_criteria=stopping
            )
        texts = []
        for new in seqs[:, width:].tolist():
            cut = next((k for k, t in enumerate(new) if t in self.model.eos_ids), len(new))
            texts.append(self.tokenizer.decode(new[:cut], skip_special_tokens=True))
        return [lm_utils.postprocess_generated_text(t, until, None) for t in texts]

    def _greedy_config(self, n: int):
        """Plain greedy decoding whatever the checkpoint's generation_config.json says
        (the same pins as ``ChatModel.generate``)."""
        from transformers import GenerationConfig

        pins = dict(do_sample=False, num_beams=1, repetition_penalty=1.0, no_repeat_ngram_size=0)
        ids = dict(pad_token_id=self.model.pad_id, eos_token_id=self.model.eos_ids or None)
        return GenerationConfig(**pins, **ids, min_new_tokens=0, max_new_tokens=n, use_cache=True)


@cache
def lm_class() -> type:
    """``ChatModelLM(model, interventions, *, batch_size, max_length, max_gen_toks)``: the
    class exists once lm-eval is imported, as it subclasses lm-eval's ``TemplateLM``."""
    require_lm_eval()
    from lm_eval.api.model import TemplateLM

    return type("ChatModelLM", (_ChatModelLMMethods, TemplateLM), {"__module__": __name__})


# ------------------------------------------------------------------ running tasks
@dataclass(frozen=True)
class LMEvalConfig:
    """What ``run_lm_eval`` evaluates and how."""

    tasks: tuple[str, ...] = DEFAULT_TASKS
    """lm-eval task, group or tag names (``lm_eval ls tasks``), or names from ``include_path``."""
    limit: int | None = None
    """Documents per task (the first ones); None: all."""
    num_fewshot: int | None = None
    """Few-shot examples; None: each task's default (5 for gsm8k, 0 for arc_challenge)."""
    include_path: str | None = None
    """A folder of extra task YAMLs (local tasks: ``dataset_path: json`` + ``data_files``)."""
    apply_chat_template: bool = True
    """Wrap each prompt in the model's chat template (few-shot examples as earlier turns)."""
    batch_size: int = 8
    """Sequences per forward pass / generation batch."""
    max_gen_toks: int = 256
    """Greedy tokens per generation for tasks that set no ``max_gen_toks``."""

    def __post_init__(self) -> None:
        require(len(self.tasks) > 0, "no lm-eval tasks given: name at least one")
        require(self.limit is None or self.limit > 0, "lm_eval limit must be positive or None")
        require(self.num_fewshot is None or self.num_fewshot >= 0, "num_fewshot must be >= 0")
        require(self.batch_size > 0 and self.max_gen_toks > 0, "batch sizes must be positive")
        require(
            self.include_path is None or Path(self.include_path).is_dir(),
            f"include_path {self.include_path!r} is not a folder of lm-eval task YAMLs",
        )


@dataclass
class LMEvalResult:
    """lm-eval metrics of every method, with the settings and versions behind them."""

    metrics: dict[str, dict[str, dict[str, float | None]]]
    """``metrics[method][task]["acc,none"]``: lm-eval's ``metric,filter`` keys (stderrs as
    ``acc_stderr,none``; None where lm-eval gives none)."""
    n_samples: dict[str, int]
    """Documents evaluated per task."""
    config: dict[str, Any]
    """The ``LMEvalConfig`` as a dict, plus the model name and each method's interventions."""
    versions: dict[str, str | None] = field(default_factory=dict)
    """Package versions (lm-eval included) and git hash."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    """Per method, task, document and filter: prompt, target, responses and metrics."""

    FILE = "lm_eval.json"
    SAMPLES = "lm_eval_samples.jsonl"

    def save(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        body = {k: getattr(self, k) for k in ("metrics", "n_samples", "config", "versions")}
        write_json(Path(folder) / self.FILE, body)
        write_jsonl(Path(folder) / self.SAMPLES, self.samples)

    @classmethod
    def load(cls, folder: Path) -> LMEvalResult:
        folder = Path(folder)
        if not (folder / cls.FILE).is_file():
            raise RefusalScopeError(f"{folder} holds no {cls.FILE}; run run_lm_eval first")
        samples = read_jsonl(folder / cls.SAMPLES) if (folder / cls.SAMPLES).is_file() else []
        return cls(**read_json(folder / cls.FILE), samples=samples)


def _load_tasks(tasks: Sequence[str], include_path: str | None):
    """A TaskManager and the task/group objects named, loaded (datasets read) once."""
    from lm_eval.tasks import TaskManager

    # Indexing lm-eval's own ~15k task YAMLs takes seconds: skipped when not needed.
    manager = None
    if include_path is not None:
        manager = TaskManager(include_path=include_path, include_defaults=False)
        manager = manager if set(tasks) <= set(manager.all_tasks) else None
    manager = manager or TaskManager(include_path=include_path)
    unknown = {t: difflib.get_close_matches(t, manager.all_tasks, n=3) for t in tasks}
    unknown = {t: close for t, close in unknown.items() if t not in manager.all_tasks}
    if unknown:
        raise RefusalScopeError(
            f"unknown lm-eval task(s) {unknown} (name: close matches); list them with "
            "`lm_eval ls tasks`, or pass include_path= a folder with their YAML files"
        )
    objects: list[Any] = []
    for name in tasks:
        loaded = manager.load([name])
        groups = loaded.get("groups") or {}
        objects += [groups[name]] if name in groups else list(loaded["tasks"].values())
    return manager, objects


def _number(value: Any) -> float | None:
    """lm-eval writes "N/A" for a missing stderr; strict JSON has no NaN."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _compact_samples(method: str, samples: Mapping[str, list[dict]]) -> list[dict[str, Any]]:
    """One row per document and filter: prompt, target, filtered and raw responses, metrics."""
    rows = []
    for task, docs in samples.items():
        for s in docs:
            head = {"method": method, "task": task, "doc_id": s["doc_id"], "filter": s["filter"]}
            rows.append(head | {"prompt": s["arguments"][0][0], "target": str(s["target"])})
            rows[-1] |= {"responses": to_dict(s["filtered_resps"]), "raw": to_dict(s["resps"])}
            rows[-1]["metrics"] = {m: _number(s[m]) for m in s["metrics"]}
    return rows


def run_lm_eval(
    model: ChatModel,
    methods: Mapping[str, Sequence[Intervention]],
    tasks: Sequence[str] = DEFAULT_TASKS,
    limit: int | None = None,
    num_fewshot: int | None = None,
    include_path: str | Path | None = None,
    apply_chat_template: bool = True,
    batch_size: int = 8,
    **options: Any,
) -> LMEvalResult:
    """lm-eval ``tasks`` under each method's interventions (``{"base": []}``: none).

    ``options``: other ``LMEvalConfig`` fields. Every method sees the same task objects,
    documents and few-shot examples (lm-eval's fixed seeds).
    """
    names = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    path = None if include_path is None else str(include_path)
    cfg = LMEvalConfig(names, limit, num_fewshot, path, apply_chat_template, batch_size, **options)
    require(len(methods) > 0, "no methods to evaluate: pass e.g. {'base': []}")
    for method, ivs in methods.items():
        check_prompt_independent(method, ivs)
    lm_eval = require_lm_eval()
    manager, objects = _load_tasks(cfg.tasks, cfg.include_path)
    metrics, n_samples, samples = {}, {}, []
    for method, ivs in methods.items():
        lm = lm_class()(model, ivs, batch_size=cfg.batch_size, max_gen_toks=cfg.max_gen_toks)
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=objects,
            task_manager=manager,
            num_fewshot=cfg.num_fewshot,
            limit=cfg.limit,
            apply_chat_template=cfg.apply_chat_template,
            fewshot_as_multiturn=cfg.apply_chat_template,
            bootstrap_iters=1000,  # stderrs without a closed form; lm-eval's 100000 is slow
        )
        metrics[method] = {
            task: {k: _number(v) for k, v in values.items() if "," in k}
            for task, values in out["results"].items()
        }
        n_samples = {t: int(n["effective"]) for t, n in out["n-samples"].items()}
        samples += _compact_samples(method, out["samples"])
        log.info("lm-eval %s: %s", method, metrics[method])
    described = {m: [type(iv).__name__ for iv in ivs] for m, ivs in methods.items()}
    config = {**to_dict(cfg), "model": model.name, "methods": described}
    provenance = {**versions(), "lm_eval": lm_eval.__version__}
    return LMEvalResult(metrics, n_samples, config, provenance, samples)
