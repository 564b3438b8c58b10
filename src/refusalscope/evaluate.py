"""Stage 7–10 — steering with the feature sets, judged and costed (METHOD.md §5–7).

* jailbreak: greedy generations on harmful test prompts under each method, judged;
* capability: CE per token on the base model's own responses to harmless prompts and on
  held-out plain text, and the judge's complied rate on harmless prompts, under each
  method's global intervention;
* induction: refusal rate on harmless prompts with the global F* set to a sweep of
  values, vs CosSim and activation addition;
* sweep: clamp scale c × K* on the harmful train split, which picks the defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .config import require
from .errors import RefusalScopeError
from .features import FeatureSets
from .hooks import Intervention
from .interventions import AblateDirection, AddDirection, ScaleFeatures, SetFeatures
from .judges import Judge, summarize
from .model import ChatModel
from .saes import SAESet
from .types import Prompt

log = logging.getLogger(__name__)

JAILBREAK_METHODS = ("base", "cossim", "actdiff", "ap", "fstar", "ablate_direction")
PER_PROMPT_METHODS = ("fstar", "ap")


@dataclass(frozen=True)
class EvalConfig:
    """Steering and evaluation settings."""

    k_star: int = 20
    """Features clamped per prompt / globally (used when ``use_sweep`` is off)."""
    c: float = -3.0
    """Clamp scale ``f' = c·f`` (used when ``use_sweep`` is off)."""
    use_sweep: bool = True
    """Evaluate with the (c, K*) that jailbreaks most on the train split."""
    sweep_c: tuple[float, ...] = (0.0, -1.0, -2.0, -3.0)
    """Clamp scales tried in the sweep (authors' grid)."""
    sweep_k: tuple[int, ...] = (10, 20, 30, 40, 50)
    """K* values tried in the sweep (authors' grid); values above the pool are skipped."""
    n_sweep: int = 64
    """Harmful train prompts generated per sweep cell."""
    positions: str = "all"
    """Where feature clamps act: ``all`` (prompt and generated tokens) or ``prompt``."""
    max_new_tokens: int = 64
    """Greedy tokens per generation."""
    batch_size: int = 32
    """Prompts per generation batch."""
    induction_values: tuple[float, ...] | None = None
    """Values F* is set to for refusal induction; None: multiples of the mean max
    activation of the global F* on harmful prompts."""
    induction_multiples: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    """Multiples used when ``induction_values`` is None."""
    add_coeffs: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0)
    """Activation-addition coefficients (multiples of r_l*)."""
    n_induction: int = 100
    """Harmless test prompts for refusal induction."""
    n_capability: int = 100
    """Harmless test prompts (and text passages) for the capability cost."""
    text_file: str | None = None
    """Plain text for the CE-on-text cost: a ``.txt`` file (one passage per non-empty line)
    or ``.jsonl`` with a ``text`` field. None: the organism's held-out text; for other
    models no CE on text is computed (``ce_text`` is null)."""

    def __post_init__(self) -> None:
        require(self.k_star > 0, "evaluation.k_star must be positive")
        require(self.positions in ("all", "prompt"), "evaluation.positions: all or prompt")
        require(len(self.sweep_c) > 0 and len(self.sweep_k) > 0, "the sweep grid is empty")


@dataclass
class Steering:
    """What the interventions need: SAEs, feature sets, direction and the chosen (c, K*)."""

    saes: SAESet
    features: FeatureSets
    direction: Tensor
    layer: int
    c: float
    k_star: int
    positions: str = "all"

    def per_prompt(self, method: str, split: str, rows: Sequence[int] | None = None):
        sets = self.features.per_prompt(method, split, self.k_star)
        return sets if rows is None else [sets[i] for i in rows]

    def jailbreak(self, method: str, split: str) -> list[Intervention]:
        """Interventions for ``method`` on the prompts of ``split`` (in split order)."""
        if method == "base":
            return []
        if method == "ablate_direction":
            return [AblateDirection(self.direction)]
        if method in PER_PROMPT_METHODS:
            feats = self.per_prompt(method, split)
        else:
            feats = self.features.global_set(method, self.k_star)
        return [ScaleFeatures(self.saes, feats, positions=self.positions, c=self.c)]

    def global_(self, method: str) -> list[Intervention]:
        """Prompt-independent interventions (capability cost)."""
        if method == "base":
            return []
        if method == "ablate_direction":
            return [AblateDirection(self.direction)]
        feats = self.features.global_set(method, self.k_star)
        return [ScaleFeatures(self.saes, feats, positions=self.positions, c=self.c)]


@dataclass
class Judged:
    """Generations of one method on one prompt set, with verdicts."""

    summary: dict
    rows: list[dict] = field(default_factory=list)


def generate_and_judge(
    model: ChatModel,
    prompts: Sequence[Prompt],
    interventions: Sequence[Intervention],
    judge: Judge,
    cfg: EvalConfig,
    tag: dict,
    desc: str | None = None,
) -> Judged:
    gens = model.generate(
        [p.instruction for p in prompts],
        interventions,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        desc=desc,
    )
    verdicts = judge.judge(prompts, gens.texts)
    rows = [
        {**tag, "index": i, "prompt": p.instruction, "response": t, "judgement": v}
        for i, (p, t, v) in enumerate(zip(prompts, gens.texts, verdicts, strict=True))
    ]
    return Judged(summarize(verdicts), rows)


def run_sweep(
    model: ChatModel,
    saes: SAESet,
    features: FeatureSets,
    prompts: Sequence[Prompt],
    judge: Judge,
    cfg: EvalConfig,
) -> tuple[dict[str, dict[str, dict]], tuple[float, int]]:
    """Per-prompt F* clamped with each (c, K*) on harmful train prompts; best cell."""
    n = min(cfg.n_sweep, len(prompts))
    prompts = list(prompts)[:n]
    pool = len(features.prompt_sets["fstar"]["train"][0])
    ks = [k for k in cfg.sweep_k if k <= pool]
    if not ks:
        raise RefusalScopeError(
            f"every K* in evaluation.sweep_k {cfg.sweep_k} exceeds the {pool} ranked features"
        )
    table: dict[str, dict[str, dict]] = {}
    for c in cfg.sweep_c:
        for k in ks:
            sets = [f[:k] for f in features.prompt_sets["fstar"]["train"][:n]]
            iv = ScaleFeatures(saes, sets, positions=cfg.positions, c=c)
            res = generate_and_judge(model, prompts, [iv], judge, cfg, {}, desc=None)
            table.setdefault(str(c), {})[str(k)] = res.summary
            log.info("sweep c=%s K*=%d: %s", c, k, res.summary)
    return table, choose_sweep_cell(table)


def choose_sweep_cell(table: dict[str, dict[str, dict]]) -> tuple[float, int]:
    """The (c, K*) that jailbreaks most; ties go to the smaller K*, then the gentler c.

    ``table[str(c)][str(k)]`` is a judged summary with a ``complied`` rate. Fewer
    features and a clamp closer to 0 change the model less, so they win ties.
    """
    return max(
        ((float(c), int(k)) for c in table for k in table[c]),
        key=lambda ck: (table[str(ck[0])][str(ck[1])]["complied"], -ck[1], ck[0]),
    )


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
        T = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), T), model.pad_id, dtype=torch.long)
        attn = torch.zeros((len(chunk), T), dtype=torch.long)
        scored = torch.zeros((len(chunk), T), dtype=torch.bool)
        for b, (seq, start) in enumerate(chunk):
            ids[b, : len(seq)] = torch.tensor(seq)
            attn[b, : len(seq)] = 1
            scored[b, max(start, 1) : len(seq)] = True
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


def capability_cost(
    model: ChatModel,
    steer: Steering,
    methods: Sequence[str],
    harmless: Sequence[Prompt],
    texts: Sequence[str],
    judge: Judge,
    cfg: EvalConfig,
) -> tuple[dict[str, dict[str, float]], list[dict]]:
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
    return table, rows


def induction_values(
    model: ChatModel, steer: Steering, harmful: Sequence[str], cfg: EvalConfig
) -> list[float]:
    """Explicit values, or multiples of the global F*'s mean max activation."""
    if cfg.induction_values is not None:
        return list(cfg.induction_values)
    from .features import mean_max_activations

    feats = steer.features.global_set("fstar", steer.k_star)
    latents = {int(l): feats[feats[:, 0] == l, 1] for l in feats[:, 0].unique()}
    acts = mean_max_activations(model, steer.saes, harmful, latents, cfg.batch_size)
    scale = float(torch.cat(list(acts.values())).mean())
    return [round(m * scale, 4) for m in cfg.induction_multiples]


def refusal_induction(
    model: ChatModel,
    steer: Steering,
    harmless: Sequence[Prompt],
    values: Sequence[float],
    judge: Judge,
    cfg: EvalConfig,
) -> tuple[dict[str, dict[str, float]], list[dict]]:
    """Refusal rate on harmless prompts: F*/CosSim set to each value, activation addition."""
    harmless = list(harmless)[: cfg.n_induction]
    table: dict[str, dict[str, float]] = {}
    rows: list[dict] = []
    settings: list[tuple[str, float, list[Intervention]]] = []
    for method in ("fstar", "cossim"):
        feats = steer.features.global_set(method, steer.k_star)
        for v in values:
            clamp = SetFeatures(steer.saes, feats, positions=steer.positions, v=v)
            settings.append((method, v, [clamp]))
    for coeff in cfg.add_coeffs:
        add = AddDirection(steer.direction, steer.layer, coeff)
        settings.append(("add_direction", coeff, [add]))
    for method, value, ivs in settings:
        tag = {"eval": "induction", "method": method, "value": value}
        judged = generate_and_judge(model, harmless, ivs, judge, cfg, tag)
        table.setdefault(method, {})[str(value)] = judged.summary["refused"]
        rows += judged.rows
    return table, rows
