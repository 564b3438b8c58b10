"""Named datasets: one ``DatasetSpec`` per prompt set or text corpus, saying what it is,
where its files are published (pinned to one commit), and how its columns become
``Prompt`` fields.

``load_prompts("harmbench", "test", local_dir=DIR)`` reads the published file from
``DIR/harmbench/`` (or ``DIR`` itself), else from files already on disk, else downloads it
at the pinned revision (``sources.locate``). A config names a dataset as ``"name"`` or
``"name:split"`` (``parse_ref``). Content warning: the harmful sets are harmful by design.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..runtime.config import require
from ..runtime.errors import RefusalScopeError
from ..runtime.files import sha256_file
from ..runtime.types import Prompt
from .prompts import _row_to_prompt
from .sources import Source, locate, prompt_row, row_text, split_rows

Kind = Literal["prompts", "text"]
HARMFUL = "Harmful by design: requests for dangerous, illegal, hateful or abusive content."


@dataclass(frozen=True)
class SplitSpec:
    """One split: a published file and the rows of it that belong to the split."""

    path: str
    """The file as published, relative to the dataset's root (local and cache layout)."""
    fetch: str | None = None
    """Where downloads come from (relative to ``Source.root``) when not ``path``: a
    pinned copy of an upstream file that has no pinnable revision."""
    harmful: bool | None = None
    """Overrides the dataset's ``harmful`` for this split (None: inherit)."""
    keep: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Row filter: a row is kept when each listed column's value (stripped) is one of the
    allowed values (HarmBench's standard behaviours, Alpaca's rows without input)."""


@dataclass(frozen=True)
class Columns:
    """How a file's columns (matched case-insensitively) become ``Prompt`` fields; the
    other columns are kept in ``meta`` under their published names."""

    text: tuple[str, ...]
    """Columns holding the prompt (or passage), first non-empty wins (WildJailbreak fills
    ``adversarial`` or only ``vanilla``); a row that is a bare string is the text."""
    category: str | None = None
    """Column holding the harm category."""
    context: str | None = None
    """Column with material the prompt refers to, kept as ``meta["context"]``."""
    pair: str | None = None
    """Column whose text links prompts into pairs: ``meta["pair_id"]`` is a hash of it, so
    each adversarial prompt shares the id of the vanilla prompt it rewrites."""
    drop: tuple[str, ...] = ()
    """Columns not kept in ``meta`` (model responses, duplicated text)."""

    def __post_init__(self):
        require(len(self.text) > 0, "Columns.text must name at least one column")


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: what it is, where it is published, how to read it."""

    name: str
    """The name configs and the CLI use (lower case, ``[a-z0-9_]``)."""
    what: str
    """One line saying what the dataset is."""
    upstream: str
    """Where the files are published (a citation; downloads use ``source``)."""
    source: Source
    """Where files are downloaded from, at a pinned commit."""
    splits: Mapping[str, SplitSpec]
    """Split name -> its published file."""
    default_split: str
    """The split ``load_prompts(name)`` reads."""
    columns: Columns
    """Column mapping to ``Prompt`` fields."""
    harmful: bool | None
    """Ground truth for every prompt (a split may override); None for text corpora."""
    licence: str
    """The licence the files are published under."""
    kind: Kind = "prompts"
    """``prompts`` (``load_prompts``) or ``text`` passages (``load_texts``)."""
    content_warning: str = HARMFUL
    """What a reader of the files should expect."""

    def __post_init__(self):
        require(re.fullmatch(r"[a-z0-9_]+", self.name) is not None, f"bad name {self.name!r}")
        require(self.kind in ("prompts", "text"), f"{self.name}: kind must be prompts or text")
        require(bool(self.splits), f"{self.name}: no splits")
        require(
            self.default_split in self.splits,
            f"{self.name}: default_split {self.default_split!r} is not one of its splits",
        )


# ------------------------------------------------------------------ the registry
_RD_COMMIT = "9d852fae1a9121c78b29142de733cb1340770cc3"
# For AdvBench, StrongREJECT and TDC 2023 no upstream commit is pinned here, so downloads take
# the byte copies refusal_direction committed (dataset/raw/) at this commit; a local folder
# uses the upstream's published names and paths.
_RD_RAW = Source("github", "andyrdt/refusal_direction", _RD_COMMIT, root="dataset/raw/")
_RD_NAMES = [f"{h}_{s}" for h in ("harmful", "harmless") for s in ("train", "val", "test")]
_RD_PROCESSED = [
    "advbench", "tdc2023", "malicious_instruct", "harmbench_val", "harmbench_test",
    "jailbreakbench", "strongreject", "alpaca",
]  # fmt: skip
_HB = "data/behavior_datasets/harmbench_behaviors_text_{}.csv"
_STANDARD = {"FunctionalCategory": ("standard",)}
_WIKI = "wikitext-2-raw-v1/{}-00000-of-00001.parquet"

_SPECS = [
    DatasetSpec(
        name="refusal_direction",
        what="Arditi et al. (2024)'s processed prompt sets and harmful/harmless splits",
        upstream="https://github.com/andyrdt/refusal_direction/tree/9d852fa/dataset",
        source=Source("github", "andyrdt/refusal_direction", _RD_COMMIT, root="dataset/"),
        splits={
            **{
                n: SplitSpec(f"splits/{n}.json", harmful=n.startswith("harmful_"))
                for n in _RD_NAMES
            },
            **{n: SplitSpec(f"processed/{n}.json", harmful=n != "alpaca") for n in _RD_PROCESSED},
        },
        default_split="harmful_train",
        columns=Columns(text=("instruction",), category="category"),
        harmful=None,
        licence="Apache-2.0",
        content_warning=HARMFUL + " The harmless_* splits and alpaca are Alpaca instructions.",
    ),
    DatasetSpec(
        name="advbench",
        what="AdvBench harmful behaviours (Zou et al., 2023): goal and target string",
        upstream="https://github.com/llm-attacks/llm-attacks/blob/main/data/advbench/harmful_behaviors.csv",
        source=_RD_RAW,
        splits={"all": SplitSpec("data/advbench/harmful_behaviors.csv", fetch="advbench.csv")},
        default_split="all",
        columns=Columns(text=("goal",)),
        harmful=True,
        licence="MIT",
    ),
    DatasetSpec(
        name="harmbench",
        what="HarmBench text behaviours (Mazeika et al., 2024); test/val keep the standard ones",
        upstream="https://github.com/centerforaisafety/HarmBench/tree/8e1604d/data/behavior_datasets",
        source=Source(
            "github", "centerforaisafety/HarmBench", "8e1604d1171fe8a48d8febecd22f600e462bdcdd"
        ),
        splits={
            "test": SplitSpec(_HB.format("test"), keep=_STANDARD),
            "val": SplitSpec(_HB.format("val"), keep=_STANDARD),
            "test_all": SplitSpec(_HB.format("test")),
            "val_all": SplitSpec(_HB.format("val")),
        },
        default_split="test",
        columns=Columns(text=("Behavior",), category="SemanticCategory", context="ContextString"),
        harmful=True,
        licence="MIT",
    ),
    DatasetSpec(
        name="jailbreakbench",
        what="JBB-Behaviors (Chao et al., 2024): 100 harmful behaviours and 100 benign twins",
        upstream="https://huggingface.co/datasets/JailbreakBench/JBB-Behaviors",
        source=Source(
            "hf", "JailbreakBench/JBB-Behaviors", "d8d87b8fdcb7806e3b4e45fffb2bc24aa6b17f32"
        ),
        splits={
            "harmful": SplitSpec("data/harmful-behaviors.csv", harmful=True),
            "benign": SplitSpec("data/benign-behaviors.csv", harmful=False),
        },
        default_split="harmful",
        columns=Columns(text=("Goal",), category="Category"),
        harmful=None,
        licence="MIT",
        content_warning=HARMFUL + " The benign split touches the same topics harmlessly.",
    ),
    DatasetSpec(
        name="strongreject",
        what="StrongREJECT forbidden prompts (Souly et al., 2024) with category and source",
        upstream="https://github.com/alexandrasouly/strongreject/blob/main/strongreject_dataset/strongreject_dataset.csv",
        source=_RD_RAW,
        splits={
            "all": SplitSpec(
                "strongreject_dataset/strongreject_dataset.csv", fetch="strongreject.csv"
            )
        },
        default_split="all",
        columns=Columns(text=("forbidden_prompt",), category="category"),
        harmful=True,
        licence="MIT",
    ),
    DatasetSpec(
        name="tdc2023",
        what="Trojan Detection Challenge 2023 red-teaming behaviours (dev and test phases)",
        upstream="https://github.com/centerforaisafety/tdc2023-starter-kit/tree/main/red_teaming/data",
        source=_RD_RAW,
        splits={
            s: SplitSpec(
                f"red_teaming/data/{s}/behaviors.json", fetch=f"tdc2023_{s}_behaviors.json"
            )
            for s in ("dev", "test")
        },
        default_split="dev",
        columns=Columns(text=("behavior",)),
        harmful=True,
        licence="MIT",
    ),
    DatasetSpec(
        name="alpaca",
        what="Stanford Alpaca instructions that need no input (as refusal_direction keeps them)",
        upstream="https://huggingface.co/datasets/tatsu-lab/alpaca",
        source=Source("hf", "tatsu-lab/alpaca", "dce01c9b08f87459cf36a430d809084718273017"),
        splits={
            "train": SplitSpec(
                "data/train-00000-of-00001-a09b74b3ef9c3b56.parquet", keep={"input": ("",)}
            )
        },
        default_split="train",
        columns=Columns(text=("instruction",), drop=("output", "text")),
        harmful=False,
        licence="CC BY-NC 4.0",
        content_warning="Machine-generated instructions, not screened for offensive content.",
    ),
    DatasetSpec(
        name="catqa",
        what="CatQA (Bhardwaj et al., 2024): 550 harmful questions, 11 categories x 5 subtypes",
        upstream="https://huggingface.co/datasets/declare-lab/CategoricalHarmfulQA",
        source=Source(
            "hf", "declare-lab/CategoricalHarmfulQA", "321e068b391b7d1aeeb882ac468356a9513c9167"
        ),
        splits={
            code: SplitSpec(f"data/catqa_{lang}.json")
            for code, lang in (("en", "english"), ("zh", "chinese"), ("vi", "vietnamese"))
        },
        default_split="en",
        columns=Columns(text=("Question",), category="Category"),
        harmful=True,
        licence="Apache-2.0",
    ),
    DatasetSpec(
        name="wildjailbreak",
        what="WildJailbreak (Jiang et al., 2024): harmful requests, vanilla and adversarial",
        upstream="https://huggingface.co/datasets/allenai/wildjailbreak",
        source=Source("hf", "allenai/wildjailbreak", "5ddc12a7894f842b0619b8e1c7ee496b198af009"),
        splits={
            "train": SplitSpec(
                "train/train.tsv", keep={"data_type": ("adversarial_harmful", "vanilla_harmful")}
            ),
            "eval": SplitSpec("eval/eval.tsv", keep={"data_type": ("adversarial_harmful",)}),
        },
        default_split="train",
        columns=Columns(text=("adversarial", "vanilla"), pair="vanilla", drop=("completion",)),
        harmful=True,
        licence="ODC-BY (gated on the Hub: accept its terms and set HF_TOKEN)",
    ),
    DatasetSpec(
        name="wikitext",
        what="WikiText-2 raw (Merity et al., 2016); its test/validation equal WikiText-103's",
        upstream="https://huggingface.co/datasets/Salesforce/wikitext",
        source=Source("hf", "Salesforce/wikitext", "b08601e04326c79dfdd32d625aee71d232d685c3"),
        splits={s: SplitSpec(_WIKI.format(s)) for s in ("test", "validation", "train")},
        default_split="test",
        columns=Columns(text=("text",)),
        harmful=None,
        licence="CC BY-SA 3.0 / GFDL",
        kind="text",
        content_warning="Wikipedia Good and Featured articles; ordinary encyclopaedic text.",
    ),
]
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in _SPECS}
"""Every named dataset, by name."""


# ------------------------------------------------------------------ lookup
def dataset_names() -> list[str]:
    return sorted(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """The spec of ``name``; an error listing the known names otherwise."""
    spec = DATASETS.get(name.strip().lower())
    if spec is None:
        raise RefusalScopeError(
            f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}"
        )
    return spec


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"name"`` or ``"name:split"`` -> (name, split or None), checked against the
    registry."""
    name, _, split = ref.strip().partition(":")
    spec = get_spec(name)
    split = split.strip() or None
    if split is not None:
        _check_split(spec, split)
    return spec.name, split


def _check_split(spec: DatasetSpec, split: str) -> None:
    if split not in spec.splits:
        raise RefusalScopeError(
            f"dataset {spec.name!r} has no split {split!r}; its splits: {', '.join(spec.splits)}"
        )


def _resolve(name: str, split: str | None, kind: Kind | None) -> tuple[DatasetSpec, str]:
    """Spec and split of a name (or ``"name:split"``); ``kind`` checked when given."""
    if ":" in name and split is None:
        name, split = parse_ref(name)
    spec = get_spec(name)
    split = split or spec.default_split
    _check_split(spec, split)
    if kind is not None and spec.kind != kind:
        other = "load_texts" if spec.kind == "text" else "load_prompts"
        raise RefusalScopeError(f"dataset {spec.name!r} holds {spec.kind}; read it with {other}")
    return spec, split


# ------------------------------------------------------------------ loading
def load_prompts(
    name: str, split: str | None = None, local_dir: str | Path | None = None
) -> list[Prompt]:
    """The prompts of ``name`` (or ``"name:split"``), each with ``meta["dataset"]`` and
    ``meta["split"]``; text stripped of surrounding whitespace, as refusal_direction's
    processed files are."""
    spec, split = _resolve(name, split, "prompts")
    harmful = spec.splits[split].harmful
    harmful = spec.harmful if harmful is None else harmful
    return [
        _row_to_prompt(prompt_row(spec, split, row, where), harmful, where)
        for where, row in split_rows(spec, split, local_dir)
    ]


def load_texts(
    name: str, split: str | None = None, local_dir: str | Path | None = None
) -> list[str]:
    """The non-empty passages of a text corpus, stripped."""
    spec, split = _resolve(name, split, "text")
    texts = (row_text(spec, row, where)[1] for where, row in split_rows(spec, split, local_dir))
    return [t.strip() for t in texts if t.strip()]


# ------------------------------------------------------------------ provenance
def content_hash(name: str, split: str | None = None, local_dir: str | Path | None = None) -> str:
    """SHA-256 over the file a split is read from (its published path and bytes), so the
    same data hashes the same wherever the folder is, and any edit changes it."""
    spec, split = _resolve(name, split, None)
    path = locate(spec, split, local_dir)
    digest = hashlib.sha256(f"{spec.splits[split].path}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def describe(name: str, local_dir: str | Path | None = None) -> dict[str, Any]:
    """What ``refusalscope datasets NAME`` prints: the spec, and per split its file, row
    count and counts per category (or the error that kept it from loading). Raises when
    no split can be loaded."""
    spec = get_spec(name)
    splits: dict[str, Any] = {}
    for split in spec.splits:
        try:
            splits[split] = _describe_split(spec, split, local_dir)
        except RefusalScopeError as e:
            splits[split] = {"error": str(e)}
    if all("error" in s for s in splits.values()):
        raise RefusalScopeError(splits[spec.default_split]["error"])
    fields = ("name", "what", "kind", "licence", "content_warning", "upstream")
    src = f"{spec.source.host}:{spec.source.repo}@{spec.source.revision}"
    return {**{k: getattr(spec, k) for k in fields}, "source": src, "splits": splits}


def _describe_split(spec: DatasetSpec, split: str, local_dir: str | Path | None) -> dict:
    path = locate(spec, split, local_dir)
    out: dict[str, Any] = {"file": str(path), "sha256": content_hash(spec.name, split, local_dir)}
    if spec.kind == "text":
        out["n"] = len(load_texts(spec.name, split, local_dir))
        return out
    prompts = load_prompts(spec.name, split, local_dir)
    by_cat = Counter(p.category or "(none)" for p in prompts)
    out.update(
        n=len(prompts),
        harmful=prompts[0].harmful,
        categories=dict(sorted(by_cat.items(), key=lambda kv: (-kv[1], kv[0]))),
    )
    return out
