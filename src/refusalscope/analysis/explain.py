"""Stage ``explain`` — a card for every feature some method or analysis selected: what it
is (top-activating contexts with the token highlighted, density and histogram, the
decoder's logit lens, the label it tracks best), why it was picked (which methods, its
cosine to the refusal direction, its LA-IG distribution) and what moving it does (its
exact effect, the effect of clamping it alone), with a Neuronpedia link for registry SAEs
and, when configured, an explanation from an OpenAI-compatible endpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from ..evaluation.ranking import mean_ci
from ..runtime.config import require
from ..runtime.files import read_json, write_json
from ..runtime.model import ChatModel
from ..runtime.saes import SAESet
from ..runtime.types import Prompt, feature_list
from ..stages.attribution import AttributionConfig, AttributionResult
from ..stages.features import FeatureSets
from .cards import (
    card_id,
    clamp_alone,
    direction_cosines,
    exact_stats,
    laig_stats,
    logit_lens,
    neuronpedia_links,
    selected_features,
    token_attribution,
)
from .corpus import (
    CorpusItem,
    CorpusScan,
    histogram,
    label_tracking,
    prompt_items,
    response_items,
    scan_corpus,
    text_items,
    top_contexts,
)
from .explainer import ExplainerConfig, explain_features

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExplainConfig:
    """The feature cards: corpus, contexts, and the optional automatic explanation."""

    enabled: bool = True
    n_contexts: int = 8
    """Top-activating contexts per card."""
    context_before: int = 12
    """Tokens shown before the peak token."""
    context_after: int = 4
    """Tokens shown after it."""
    max_tokens: int = 128
    """Tokens per corpus sequence at most."""
    corpus_dataset: str | None = None
    """Extra plain text streamed with Hugging Face ``datasets`` (hub id or local path),
    e.g. ``monology/pile-uncopyrighted``; None: the run's prompts, the base model's
    responses and the run's plain text (the organism's held-out text) only."""
    corpus_config: str | None = None
    corpus_split: str = "train"
    corpus_field: str = "text"
    corpus_size: int = 1000
    """Passages taken from ``corpus_dataset``."""
    logit_lens_k: int = 10
    clamp_prompts: int = 16
    """Harmful test prompts the clamp-alone effect is measured on (0: not measured)."""
    example_prompts: int = 4
    """Harmful test prompts shown with token-level LA-IG of the global F* (0: none)."""
    bins: int = 20
    max_cards: int = 300
    """Cards at most (in card order: global sets first)."""
    explainer: ExplainerConfig = field(default_factory=ExplainerConfig)
    """An OpenAI-compatible endpoint for one-line explanations (off unless base_url set)."""

    def __post_init__(self) -> None:
        require(self.n_contexts >= 1, "explain.n_contexts must be positive")
        require(min(self.context_before, self.context_after) >= 0, "explain.context_* ≥ 0")
        require(self.max_tokens >= 4, "explain.max_tokens must be at least 4")
        require(self.corpus_size >= 1, "explain.corpus_size must be positive")
        require(self.logit_lens_k >= 1, "explain.logit_lens_k must be positive")
        require(self.clamp_prompts >= 0, "explain.clamp_prompts must be ≥ 0")
        require(self.example_prompts >= 0, "explain.example_prompts must be ≥ 0")
        require(self.bins >= 2, "explain.bins must be at least 2")
        require(self.max_cards >= 1, "explain.max_cards must be positive")


@dataclass
class ExplainResult:
    """``table``: ``results.json["explain"]`` (corpus sizes, settings); ``cards``: one
    card per feature in card order; ``examples``: token-level LA-IG of the global F* on a
    few harmful test prompts. ``cards.json`` holds both lists."""

    table: dict[str, Any]
    cards: list[dict[str, Any]]
    examples: list[dict[str, Any]] = field(default_factory=list)

    FILE = "cards.json"
    TABLE = "explain.json"

    def save(self, folder: Path) -> None:
        write_json(folder / self.FILE, self.files())
        write_json(folder / self.TABLE, self.table)

    def files(self) -> dict[str, Any]:
        """``cards.json``'s content."""
        return {"cards": self.cards, "examples": self.examples}

    @classmethod
    def from_files(cls, table: dict[str, Any], content: dict[str, Any]) -> ExplainResult:
        return cls(table, content["cards"], content.get("examples", []))

    @classmethod
    def load(cls, folder: Path) -> ExplainResult:
        return cls.from_files(read_json(folder / cls.TABLE), read_json(folder / cls.FILE))


@dataclass
class ExplainInputs:
    """What the cards are computed from (everything upstream of the stage)."""

    direction: Tensor
    features: FeatureSets
    attribution: AttributionResult
    """The harmful test prompts' attribution (LA-IG distributions, clamp prompts)."""
    k_star: int
    c: float
    summary: Mapping[str, Any]
    """``results.json`` so far (the analyses' feature sets)."""
    prompts: Sequence[Prompt]
    """Every prompt of the run (the corpus's chat-formatted part)."""
    harmful_test: Sequence[str]
    """The harmful test instructions, in the attribution's row order."""
    responses: Sequence[Mapping[str, Any]]
    """The base model's judged generations (``prompt``, ``response``, ``judgement``)."""
    texts: Sequence[str]
    attribution_config: AttributionConfig = field(default_factory=AttributionConfig)
    circuit_nodes: Sequence[Mapping[str, Any]] = ()
    faithfulness: Mapping[str, Tensor] | None = None


def compute_explain(
    model: ChatModel,
    saes: SAESet,
    x: ExplainInputs,
    cfg: ExplainConfig,
    batch_size: int = 32,
    rows_per_forward: int = 256,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> ExplainResult:
    """One card per selected feature (see the module docstring)."""
    picks = selected_features(x.features, x.k_star, x.summary, x.circuit_nodes)
    pairs = list(picks)[: cfg.max_cards]
    feats = feature_list(pairs)
    items = _corpus(model, x, cfg)
    scan = scan_corpus(model, saes, items, feats, batch_size)
    contexts = top_contexts(
        model, saes, items, feats, scan.item_max, cfg.n_contexts,
        cfg.context_before, cfg.context_after, batch_size,
    )  # fmt: skip
    columns = {
        "contexts": contexts,
        "labels": label_tracking(items, scan.scored_max),
        "logit_lens": logit_lens(model, saes, feats, cfg.logit_lens_k),
        "cos_direction": direction_cosines(saes, feats, x.direction),
        "laig": laig_stats(x.attribution, feats, cfg.bins),
        "exact_effect": exact_stats(x.faithfulness, feats, n_bootstrap, seed),
        "clamp_effect": _clamp_effects(
            model, saes, x, feats, cfg, rows_per_forward, n_bootstrap, seed
        ),
        "neuronpedia": neuronpedia_links(saes.sources, feats),
    }
    cards = _assemble(pairs, picks, scan, columns, cfg.bins)
    _add_explanations(cards, cfg.explainer)
    sources = {s: sum(it.source == s for it in items) for s in ("prompts", "responses", "text")}
    table = {
        "n_cards": len(cards),
        "n_selected": len(picks),
        "corpus": sources | {"tokens": scan.n_tokens},
        "corpus_dataset": cfg.corpus_dataset,
        "clamp": {"c": x.c, "prompts": min(cfg.clamp_prompts, len(x.attribution.score))},
        "explainer": cfg.explainer.model if cfg.explainer.enabled else None,
    }
    n = min(cfg.example_prompts, len(x.harmful_test))
    examples = token_attribution(
        model, saes, list(x.harmful_test[:n]), x.attribution.jb_token[:n],
        x.features.global_set("fstar", x.k_star), x.direction, x.attribution.ref_token,
        x.attribution_config,
    )  # fmt: skip
    return ExplainResult(table, cards, examples)


def _assemble(
    pairs: list[tuple[int, int]],
    picks: Mapping[tuple[int, int], list[str]],
    scan: CorpusScan,
    columns: Mapping[str, list],
    bins: int,
) -> list[dict[str, Any]]:
    """One card per feature: the corpus statistics, then every computed column."""
    cards = []
    for j, (layer, latent) in enumerate(pairs):
        values = scan.nonzero[j]
        card = {
            "id": card_id(layer, latent),
            "layer": layer,
            "latent": latent,
            "picked_by": picks[(layer, latent)],
            "density": round(len(values) / max(scan.n_tokens, 1), 6),
            "max_activation": round(float(values.max()), 4) if len(values) else 0.0,
            "histogram": histogram(values, bins),
        }
        card |= {name: col[j] for name, col in columns.items()}
        cards.append(card)
    return cards


def _corpus(model: ChatModel, x: ExplainInputs, cfg: ExplainConfig) -> list[CorpusItem]:
    texts = list(x.texts)
    if cfg.corpus_dataset is not None:
        from ..data.corpus import stream_texts

        texts += stream_texts(
            cfg.corpus_dataset, cfg.corpus_config, cfg.corpus_split, cfg.corpus_field,
            cfg.corpus_size,
        )  # fmt: skip
    return (
        prompt_items(model, x.prompts, cfg.max_tokens)
        + response_items(model, x.responses, cfg.max_tokens)
        + text_items(model, texts, cfg.max_tokens)
    )


def _clamp_effects(
    model: ChatModel,
    saes: SAESet,
    x: ExplainInputs,
    feats: Tensor,
    cfg: ExplainConfig,
    rows_per_forward: int,
    n_bootstrap: int,
    seed: int,
) -> list[dict | None]:
    """Mean Δm of clamping each feature alone to ``c·f`` on the first ``clamp_prompts``
    harmful test prompts (positive: towards complying)."""
    n = min(cfg.clamp_prompts, len(x.attribution.score))
    if n == 0:
        return [None] * len(feats)
    tokens = model.tokenize(list(x.harmful_test[:n]))
    jb = x.attribution.jb_token[:n].to(model.device)
    effect = clamp_alone(
        model, saes, tokens, jb, x.attribution.ref_token, feats, x.c, rows_per_forward
    )
    return [mean_ci(effect[:, j].tolist(), n_bootstrap, seed) for j in range(len(feats))]


def _add_explanations(cards: list[dict[str, Any]], cfg: ExplainerConfig) -> None:
    """Fill ``explanation`` (None unless an endpoint is configured)."""
    for card in cards:
        card["explanation"] = None
    if not cfg.enabled:
        return
    contexts = {
        c["id"]: [list(zip(ctx["tokens"], ctx["acts"], strict=True)) for ctx in c["contexts"]]
        for c in cards
        if c["contexts"]
    }
    found = explain_features(contexts, cfg)
    for card in cards:
        card["explanation"] = found.get(card["id"])
