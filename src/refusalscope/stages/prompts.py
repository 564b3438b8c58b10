"""Stage 1 — harmful/harmless prompt splits, filtered by the model's own behaviour.

Sources: the organism's generated splits (labels kept), local prompt files (read by
``refusalscope.data.prompts``) by split or in refusal_direction's folder layout, or named
datasets (``refusalscope.data.registry``: HarmBench, JailbreakBench, AdvBench, …) by split.
As the authors did, the train/val splits keep only harmful prompts the model refuses
and harmless prompts it answers; the test splits are kept whole.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..data.prompts import load_prompt_file
from ..data.registry import content_hash, load_prompts, parse_ref
from ..judges import Judge
from ..runtime.config import require
from ..runtime.errors import RefusalScopeError
from ..runtime.files import read_json, sha256_file, write_json
from ..runtime.model import ChatModel
from ..runtime.types import Prompt

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PromptConfig:
    """Where prompts come from and how many of each are used."""

    files: dict[str, str] | None = None
    """Instruction files by split name (``harmful_train``, ``harmless_test``, ...); None
    uses the organism's splits. A missing val split is carved out of train."""
    dataset_dir: str | None = None
    """A folder laid out like refusal_direction's ``splits/{harmful,harmless}_{split}.json``
    (fills ``files``)."""
    datasets: dict[str, tuple[str, ...]] | None = None
    """Named datasets by split (``refusalscope datasets`` lists them), e.g.
    ``harmful_test = ["harmbench:test", "jailbreakbench", "advbench"]``; a ref is ``name`` or
    ``name:split``. In a test split each dataset gives ``n_test`` prompts (the paper: 100
    each) and the jailbreak table is also reported per dataset; in train/val splits they
    are pooled. A split named here cannot also be in ``files``."""
    datasets_dir: str | None = None
    """A folder holding named datasets in their published layouts (``DIR/<name>/…``);
    None: the Hugging Face cache, else a download."""
    n_train: int = 128
    """Harmful and harmless train prompts each (before filtering)."""
    n_val: int = 32
    """Validation prompts each (direction sweep, before filtering)."""
    n_test: int = 100
    """Test prompts each (jailbreak, capability and induction evaluation)."""
    filter: bool = True
    """Keep only train/val harmful prompts the model refuses and harmless ones it answers."""
    filter_max_new_tokens: int = 32
    """Tokens generated per prompt to decide refusal when filtering."""
    seed: int = 0
    """Subsampling seed for file sources."""

    def __post_init__(self) -> None:
        require(min(self.n_train, self.n_val, self.n_test) > 0, "prompt counts must be positive")


@dataclass
class PromptSplits:
    """The prompts every later stage uses."""

    splits: dict[str, list[Prompt]]
    """``harmful_train`` … ``harmless_test`` after filtering."""
    dropped: dict[str, int] = field(default_factory=dict)
    """How many prompts filtering removed per split."""
    refusal_token: int | None = None
    """Most common first token of the model's refusals on harmful train prompts."""
    refusal_token_text: str | None = None

    FILE = "prompts.json"

    def instructions(self, name: str) -> list[str]:
        return [p.instruction for p in self.splits[name]]

    def save(self, folder: Path) -> None:
        write_json(
            folder / self.FILE,
            {
                "splits": {k: [x.to_dict() for x in v] for k, v in self.splits.items()},
                "dropped": self.dropped,
                "refusal_token": self.refusal_token,
                "refusal_token_text": self.refusal_token_text,
            },
        )

    @classmethod
    def load(cls, folder: Path) -> PromptSplits:
        d = read_json(folder / cls.FILE)
        splits = {k: [Prompt.from_dict(x) for x in v] for k, v in d["splits"].items()}
        return cls(splits, d["dropped"], d["refusal_token"], d["refusal_token_text"])


def prompt_files(cfg: PromptConfig) -> dict[str, str]:
    """Split name -> instruction file, from ``files`` and ``dataset_dir``."""
    files = dict(cfg.files or {})
    if cfg.dataset_dir:
        base = Path(cfg.dataset_dir).expanduser()
        base = base / "splits" if (base / "splits").is_dir() else base
        for side in ("harmful", "harmless"):
            for split in SPLITS:
                if (base / f"{side}_{split}.json").is_file():
                    files.setdefault(f"{side}_{split}", str(base / f"{side}_{split}.json"))
    return files


def source_fingerprint(cfg: PromptConfig) -> dict[str, str]:
    """Split name (or dataset ref) -> SHA-256 of its files, so the cache notices edited
    prompt files and changed datasets."""
    out = {}
    for name, path in sorted(prompt_files(cfg).items()):
        p = Path(path).expanduser()
        out[name] = sha256_file(p) if p.is_file() else "missing"
    return out | dataset_hashes(cfg)


def dataset_hashes(cfg: PromptConfig) -> dict[str, str]:
    """Each named dataset ref the config uses -> the content hash of the files read."""
    refs = sorted({ref for refs in (cfg.datasets or {}).values() for ref in refs})
    return {ref: content_hash(*parse_ref(ref), cfg.datasets_dir) for ref in refs}


def check_prompt_sources(cfg: PromptConfig) -> dict[str, str]:
    """The prompt files by split; raise unless every required split has an existing file."""
    if cfg.dataset_dir and not Path(cfg.dataset_dir).expanduser().is_dir():
        raise RefusalScopeError(f"prompts.dataset_dir {cfg.dataset_dir} is not a folder")
    files = prompt_files(cfg)
    named = cfg.datasets or {}
    known = {f"{side}_{split}" for side in ("harmful", "harmless") for split in SPLITS}
    for where, splits in (("prompts.files", files), ("prompts.datasets", named)):
        unknown = sorted(set(splits) - known)
        if unknown:
            raise RefusalScopeError(
                f"unknown prompt split(s) {', '.join(unknown)} in {where}; name them "
                "harmful_ or harmless_ followed by train, val or test"
            )
    both = sorted(set(named) & set(cfg.files or {}))
    if both:
        raise RefusalScopeError(
            f"split(s) {', '.join(both)} are in both prompts.files and prompts.datasets; keep one"
        )
    for ref in sorted({ref for refs in named.values() for ref in refs}):
        parse_ref(ref)  # a known dataset and split
    for side in ("harmful", "harmless"):
        for split in ("train", "test"):
            if f"{side}_{split}" not in files and not named.get(f"{side}_{split}"):
                raise RefusalScopeError(
                    f"no {side}_{split} prompts: set prompts.files.{side}_{split}, "
                    f"prompts.datasets.{side}_{split} or prompts.dataset_dir"
                )
    for name, path in sorted(files.items()):
        if not Path(path).expanduser().is_file():
            raise RefusalScopeError(f"prompt file for {name} ({path}) does not exist")
    return files


def check_prompt_files(cfg: PromptConfig) -> dict[str, int]:
    """Load and check every configured prompt file, without a model: the number of
    prompts each split will use (before filtering)."""
    return {name: len(prompts) for name, prompts in _file_splits(cfg).items()}


def _file_splits(cfg: PromptConfig) -> dict[str, list[Prompt]]:
    files = check_prompt_sources(cfg)
    rng = random.Random(cfg.seed)
    out: dict[str, list[Prompt]] = {}
    for side in ("harmful", "harmless"):
        loaded = {
            s: _split_sources(cfg, files, f"{side}_{s}", side == "harmful")
            for s in SPLITS
            if f"{side}_{s}" in files or (cfg.datasets or {}).get(f"{side}_{s}")
        }
        if "val" not in loaded:  # carve val out of train, deterministically
            train = [p for part in loaded["train"] for p in part]
            if len(train) <= cfg.n_val:
                source = files.get(f"{side}_train") or " + ".join(cfg.datasets[f"{side}_train"])
                raise RefusalScopeError(
                    f"{source} has {len(train)} prompts, and prompts.n_val={cfg.n_val} of "
                    "them are set aside for validation, leaving none to train on; add "
                    f"{side}_val prompts or lower prompts.n_val"
                )
            rng.shuffle(train)
            loaded["val"], loaded["train"] = [train[: cfg.n_val]], [train[cfg.n_val :]]
        for s, n in (("train", cfg.n_train), ("val", cfg.n_val), ("test", cfg.n_test)):
            parts = loaded[s] if s == "test" else [[p for part in loaded[s] for p in part]]
            out[f"{side}_{s}"] = [p for part in parts for p in _sample(part, n, rng)]
    return out


def _split_sources(
    cfg: PromptConfig, files: dict[str, str], name: str, harmful: bool
) -> list[list[Prompt]]:
    """The prompts of split ``name``, one list per source: its file, or each named dataset
    (every prompt labelled with its dataset and harmfulness as the split says)."""
    if name in files:
        return [load_prompt_file(files[name], harmful)]
    parts = []
    for ref in (cfg.datasets or {})[name]:
        dataset, split = parse_ref(ref)
        prompts = load_prompts(dataset, split, cfg.datasets_dir)
        parts.append(
            [
                Prompt(p.instruction, harmful, p.category, {**p.meta, "dataset": ref})
                for p in prompts
            ]
        )
    return parts


def _sample(prompts: list[Prompt], n: int, rng: random.Random) -> list[Prompt]:
    items = prompts[:]
    rng.shuffle(items)
    return items[:n]


def _organism_splits(cfg: PromptConfig, organism_splits: dict[str, list[Prompt]]):
    sizes = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}
    return {name: list(ps)[: sizes[name.split("_")[1]]] for name, ps in organism_splits.items()}


def compute_prompts(
    model: ChatModel,
    cfg: PromptConfig,
    judge: Judge,
    organism_splits: dict[str, list[Prompt]] | None = None,
    batch_size: int = 32,
    max_new_tokens: int | None = None,
) -> PromptSplits:
    """Load the splits, filter train/val by behaviour and detect the refusal token.

    ``max_new_tokens``: the longest generation any later stage makes from these prompts
    (default ``cfg.filter_max_new_tokens``); every prompt plus that must fit the model.
    """
    if cfg.files or cfg.dataset_dir or cfg.datasets:
        splits = _file_splits(cfg)
    elif organism_splits is not None:
        splits = _organism_splits(cfg, organism_splits)
    else:
        raise RefusalScopeError(
            "no prompts: configure prompts.files, prompts.datasets or prompts.dataset_dir"
        )
    check_prompt_lengths(model, splits, max_new_tokens or cfg.filter_max_new_tokens)
    dropped: dict[str, int] = {}
    first_tokens: Counter[int] = Counter()
    for name in [n for n in splits if not n.endswith("_test")]:
        prompts = splits[name]
        gens = model.generate(
            [p.instruction for p in prompts],
            max_new_tokens=cfg.filter_max_new_tokens,
            batch_size=batch_size,
            desc=f"filter {name}",
        )
        verdicts = judge.judge(prompts, gens.texts)
        want = "refused" if name.startswith("harmful") else "complied"
        if name == "harmful_train":
            pairs = zip(gens.token_ids, verdicts, strict=True)
            first_tokens.update(ids[0] for ids, v in pairs if v == "refused" and ids)
        if cfg.filter:
            kept = [p for p, v in zip(prompts, verdicts, strict=True) if v == want]
            dropped[name] = len(prompts) - len(kept)
            splits[name] = kept
        if not splits[name]:
            what = "refused none of" if want == "refused" else "answered none of"
            raise RefusalScopeError(
                f"the {name} split is empty after filtering: the model {what} its "
                f"{len(prompts)} prompts. Check the model is a refusing chat model and the "
                "judge fits it, or set prompts.filter = false"
            )
    ref = first_tokens.most_common(1)[0][0] if first_tokens else None
    log.info("prompts kept: %s; dropped: %s", {k: len(v) for k, v in splits.items()}, dropped)
    return PromptSplits(
        splits=splits,
        dropped=dropped,
        refusal_token=ref,
        refusal_token_text=model.tokenizer.decode([ref]) if ref is not None else None,
    )


def check_prompt_lengths(
    model: ChatModel, splits: dict[str, list[Prompt]], max_new_tokens: int
) -> None:
    """Raise if a chat-formatted prompt plus ``max_new_tokens`` exceeds the model's
    positions. Only prompts long enough in UTF-8 bytes are tokenized: no tokenizer makes
    more tokens than bytes, besides a BOS and a leading-space piece."""
    limit = model.max_positions
    if limit is None:
        return
    budget = limit - max_new_tokens
    if budget <= 0:
        raise RefusalScopeError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in {model.name}'s "
            f"{limit} positions; lower max_new_tokens"
        )
    overhead = len(model.format("").encode()) + 2
    for name, prompts in splits.items():
        for p in prompts:
            if len(p.instruction.encode()) + overhead <= budget:
                continue
            n = model.tokenize([p.instruction]).input_ids.shape[1]
            if n > budget:
                raise RefusalScopeError(
                    f"a {name} prompt ({p.instruction[:60]!r}...) is {n} tokens; with "
                    f"max_new_tokens={max_new_tokens} that exceeds the {limit} positions of "
                    f"{model.name}. Shorten or remove that prompt in its file."
                )


def resolve_refusal_token(model: ChatModel, token: str | int) -> int:
    """Token id of the refusal token, given as text (must be one token) or id."""
    if isinstance(token, int):
        return token
    ids = model.tokenizer(token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise RefusalScopeError(
            f"refusal token {token!r} is {len(ids)} tokens for this tokenizer; give a string "
            "that is exactly one token (e.g. 'I')"
        )
    return int(ids[0])
