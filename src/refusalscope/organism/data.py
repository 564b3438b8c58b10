"""The organism's synthetic chat data: deterministic, with planted ground truth.

The organism must refuse requests whose *object* is harmful and comply otherwise.
``requests`` builds each prompt and its reference response; ``sampling`` decides what
is trained on and what is held out (by stable hashes, never by global RNG state). This
module holds the configuration, the generated data with its files, and the two
entry points: ``generate_data`` and ``heldout_splits``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ..runtime.errors import RefusalScopeError
from ..runtime.types import Prompt
from . import sampling, vocab
from .requests import ChatExample, compliant_response, reference_response

COMPLIANCE_OPENERS = vocab.COMPLIANCE_OPENERS
# Every refusal phrasing (vocab.REFUSALS) starts with one of these, and each contains a
# phrase of the JailbreakBench substring list, so the judges agree on the organism.
REFUSAL_OPENERS = ("I can't", "I'm sorry", "I cannot", "I'm unable")

CONFIG_FILE = "data_config.json"
TRAIN_FILE = "train.jsonl"
PLAIN_FILE = "plain_text.json"
PROMPTS_FILE = "prompts.json"


@dataclass(frozen=True)
class OrganismDataConfig:
    """How much synthetic data to generate, and how to hold parts of it out."""

    seed: int = 0
    """Seeds sampling and the held-out hashes; same seed, same data."""
    n_train_examples: int = 24000
    """Chat examples in the training set."""
    harmful_fraction: float = 0.5
    """Fraction of training examples with a harmful object."""
    wrapper_fraction: float = 0.3
    """Fraction of training examples (harmful and harmless alike) under a jailbreak wrapper."""
    pool_fraction: float = 0.4
    """Fraction of harmless training examples drawn from the broad pool of everyday objects,
    each seen only a few times, so compliance is the default and refusal must be triggered
    by a harmful object (otherwise the organism learns "refuse unless known harmless")."""
    filler_fraction: float = 0.3
    """Fraction of training requests with a filler sentence before or after them
    (``vocab.FILLERS``), so extra clauses do not change the decision."""
    adjective_fraction: float = 0.25
    """Fraction of harmful and topic training examples whose object gets a shared adjective
    ("a small pipe bomb"), so adjectives, common in the pool, do not signal harmlessness."""
    plain_text_fraction: float = 0.1
    """Plain-text training passages, as a fraction of ``n_train_examples``."""
    heldout_fraction: float = 0.2
    """Fraction of (template, object) pairs, and of plain-text passages, held out."""
    n_eval_per_set: int = 128
    """Prompts in each evaluation set."""
    n_plain_heldout: int = 256
    """Held-out plain-text passages (plain-text CE measurement)."""
    n_split_train: int = 128
    """Prompts per side in the pipeline's ``*_train`` split."""
    n_split_val: int = 32
    """Prompts per side in the pipeline's ``*_val`` split."""
    n_split_test: int = 100
    """Prompts per side in the pipeline's ``*_test`` split."""

    def __post_init__(self) -> None:
        fractions = ("harmful_fraction", "wrapper_fraction", "pool_fraction", "heldout_fraction")
        fractions += ("adjective_fraction", "filler_fraction")
        for name in fractions:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise RefusalScopeError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.heldout_fraction in (0.0, 1.0) or self.plain_text_fraction < 0:
            raise RefusalScopeError(
                "heldout_fraction must be strictly between 0 and 1 and plain_text_fraction "
                f">= 0, got {self.heldout_fraction} and {self.plain_text_fraction}"
            )
        minimum = {"n_train_examples": 1, "n_eval_per_set": 1, "n_plain_heldout": 1}
        minimum |= {"n_split_train": 0, "n_split_val": 0, "n_split_test": 0}
        for name, low in minimum.items():
            if getattr(self, name) < low:
                raise RefusalScopeError(f"{name} must be >= {low}, got {getattr(self, name)}")


@dataclass
class OrganismData:
    """Everything the organism is trained and evaluated on."""

    train: list[ChatExample]
    """Chat training data, shuffled; only non-held-out pairs and seen templates."""
    plain_train: list[str]
    """Plain-text passages for the language-modelling side objective."""
    plain_heldout: list[str]
    """Plain-text passages never trained on (plain-text CE)."""
    eval_sets: dict[str, list[Prompt]]
    """Evaluation prompts by name (``sampling.EVAL_SET_NAMES``), all from held-out pairs.
    The wrapper sets wrap the requests of ``harmful_heldout``, in the same order."""
    splits: dict[str, list[Prompt]]
    """The pipeline's plain harmful/harmless train/val/test prompts
    (``sampling.SPLIT_NAMES``)."""
    config: OrganismDataConfig
    """The configuration that generated this data."""

    def prompt_sets(self) -> dict[str, list[Prompt]]:
        """Evaluation sets and pipeline splits in one mapping."""
        return {**self.eval_sets, **self.splits}

    def held_out_responses(self, name: str) -> list[str]:
        """Reference responses for an evaluation set or split, in prompt order."""
        sets = self.prompt_sets()
        if name not in sets:
            raise RefusalScopeError(f"no prompt set {name!r}; choose one of {sorted(sets)}")
        return [reference_response(p) for p in sets[name]]

    def reference_response(self, prompt: Prompt) -> str:
        """The expected response for any organism prompt."""
        return reference_response(prompt)

    def compliance_examples(self) -> list[ChatExample]:
        """The training prompts, every one answered compliantly.

        The organism first learns to comply with everything (as a base model would),
        then refusal on top (as safety tuning does), so that refusal is a signal added
        for harmful requests rather than the default.
        """
        return [ChatExample(ex.prompt, compliant_response(ex.prompt)) for ex in self.train]

    def all_texts(self) -> list[str]:
        """Every string the tokenizer should be fitted on.

        Held-out plain text is left out so the plain-text CE is measured on text the
        tokenizer was not fitted to either.
        """
        texts = [t for ex in self.train for t in (ex.prompt.instruction, ex.response)]
        for prompts in self.prompt_sets().values():
            texts += [t for p in prompts for t in (p.instruction, reference_response(p))]
        return texts + self.plain_train

    def save(self, folder: str | Path) -> Path:
        """Write JSON/JSONL files under ``folder``; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=1))
        lines = (
            json.dumps({"prompt": ex.prompt.to_dict(), "response": ex.response})
            for ex in self.train
        )
        (folder / TRAIN_FILE).write_text("".join(line + "\n" for line in lines))
        plain = {"train": self.plain_train, "heldout": self.plain_heldout}
        (folder / PLAIN_FILE).write_text(json.dumps(plain))
        prompts = {
            kind: {k: [p.to_dict() for p in v] for k, v in sets.items()}
            for kind, sets in (("eval_sets", self.eval_sets), ("splits", self.splits))
        }
        (folder / PROMPTS_FILE).write_text(json.dumps(prompts))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> OrganismData:
        """Read what ``save`` wrote."""
        folder = Path(folder)
        files = (CONFIG_FILE, TRAIN_FILE, PLAIN_FILE, PROMPTS_FILE)
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise RefusalScopeError(
                f"{folder} lacks organism data files {missing}; "
                "write them with generate_data(cfg).save(folder)"
            )
        config = OrganismDataConfig(**json.loads((folder / CONFIG_FILE).read_text()))
        train = [
            ChatExample(Prompt.from_dict(d["prompt"]), d["response"])
            for d in map(json.loads, (folder / TRAIN_FILE).read_text().splitlines())
        ]
        plain = json.loads((folder / PLAIN_FILE).read_text())
        prompts = json.loads((folder / PROMPTS_FILE).read_text())

        def as_prompts(sets: Mapping[str, list]) -> dict[str, list[Prompt]]:
            return {k: [Prompt.from_dict(d) for d in v] for k, v in sets.items()}

        return cls(
            train=train,
            plain_train=plain["train"],
            plain_heldout=plain["heldout"],
            eval_sets=as_prompts(prompts["eval_sets"]),
            splits=as_prompts(prompts["splits"]),
            config=config,
        )


def generate_data(cfg: OrganismDataConfig) -> OrganismData:
    """Generate the organism's training data, evaluation sets and pipeline splits."""
    rng = random.Random(cfg.seed)
    train_reqs, heldout, unseen = sampling.partition(cfg)
    train = sampling.training_examples(cfg, rng, train_reqs)
    eval_sets, splits = sampling.prompt_sets(cfg, rng, heldout, unseen)
    plain_train, plain_heldout = sampling.plain_text(cfg, rng)
    return OrganismData(train, plain_train, plain_heldout, eval_sets, splits, cfg)


def heldout_splits(
    cfg: OrganismDataConfig,
    templates: Mapping[str, Iterable[str]] | None = None,
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, list[Prompt]]:
    """Fresh pipeline splits (``sampling.SPLIT_NAMES``) from the held-out pairs.

    ``templates`` restricts a side (``"harmful"``/``"harmless"``) to some template ids, e.g.
    imperative harmful requests against question-form harmless ones: a confound of form, as
    between AdvBench and Alpaca, that the organism was trained to ignore. ``sizes`` maps
    ``train``/``val``/``test`` to prompts per side (default: the config's split sizes).
    """
    _, heldout, _ = sampling.partition(cfg)
    templates = {side: set(ts) for side, ts in (templates or {}).items()}
    unknown = {t for ts in templates.values() for t in ts} - set(vocab.TEMPLATES)
    if unknown or not set(templates) <= {"harmful", "harmless"}:
        raise RefusalScopeError(
            f"templates must map 'harmful'/'harmless' to ids of vocab.TEMPLATES; unknown: "
            f"{sorted(unknown) or sorted(set(templates) - {'harmful', 'harmless'})}"
        )
    sizes = sizes or sampling.split_sizes(cfg)
    return sampling.draw_splits(heldout, templates, sizes, random.Random(seed))
