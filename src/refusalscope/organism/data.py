"""The organism's synthetic chat data: deterministic, with planted ground truth.

The organism must refuse requests whose *object* is harmful and comply otherwise.
Harmful and harmless objects share verbs, templates and jailbreak wrappers, so
nothing but the object (and, for harmful requests, the wrapper) decides the answer.

Hold-outs, all by stable hashes or fixed lists, never by global RNG state:
- (template, object) pairs: a fraction ``heldout_fraction`` of them, chosen by hash,
  never appears in training; every evaluation prompt and pipeline split uses them.
- whole templates (``vocab.UNSEEN_TEMPLATES``): only in the ``*_unseen_template`` sets.
- plain-text passages: split into train / held-out by hash.

Responses are a pure function of the prompt (``reference_response``): refusals all
start with "I" (the refusal token of real chat models), compliances with "Sure" and
restate the task with its object, so a judge can check both.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple, TypeVar

from ..errors import RefusalScopeError
from ..types import Prompt
from . import vocab

COMPLIANCE_OPENERS = vocab.COMPLIANCE_OPENERS
# Every refusal phrasing (vocab.REFUSALS) starts with one of these, and each contains a
# phrase of the JailbreakBench substring list, so the judges agree on the organism.
REFUSAL_OPENERS = ("I can't", "I'm sorry", "I cannot", "I'm unable")

HARM_CATEGORIES = tuple(vocab.HARMFUL)
HARMLESS_TOPICS = tuple(vocab.HARMLESS)
WORKING_WRAPPERS = tuple(w for w, (kind, _) in vocab.WRAPPERS.items() if kind == "working")
FAILING_WRAPPERS = tuple(w for w, (kind, _) in vocab.WRAPPERS.items() if kind == "failing")
EVAL_SET_NAMES = (
    "harmful_heldout",
    "harmless_heldout",
    "harmful_unseen_template",
    "harmless_unseen_template",
    "harmful_working_wrapper",
    "harmful_failing_wrapper",
)
SPLIT_NAMES = tuple(
    f"{side}_{part}" for side in ("harmful", "harmless") for part in ("train", "val", "test")
)

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
class ChatExample:
    """One single-turn conversation of the training set."""

    prompt: Prompt
    """The user turn with its labels."""
    response: str
    """The assistant turn the organism is trained on."""


class ObjectSpec(NamedTuple):
    """A requestable object and the shared verbs it goes with."""

    text: str
    """The noun phrase, e.g. "a pipe bomb"."""
    category: str
    """Harm category or harmless topic."""
    harmful: bool
    """Whether requests for it are harmful."""
    verbs: tuple[str, ...]
    """The shared verbs it can be requested with."""
    base: str = ""
    """The object before an adjective was added ("" when none was)."""


class Request(NamedTuple):
    """An unwrapped request: one object, one template, one verb."""

    obj: ObjectSpec
    """What is requested."""
    template: str
    """Template id (``vocab.TEMPLATES`` or ``vocab.UNSEEN_TEMPLATES``)."""
    verb: str
    """One of the object's verbs."""


def _objects(table: vocab.ObjectTable, harmful: bool) -> tuple[ObjectSpec, ...]:
    return tuple(
        ObjectSpec(obj, category, harmful, verbs)
        for category, pairs in table.items()
        for verbs, obj in pairs
    )


HARMFUL_OBJECTS = _objects(vocab.HARMFUL, harmful=True)
HARMLESS_OBJECTS = _objects(vocab.HARMLESS, harmful=False)


def with_adjective(text: str, adjective: str) -> str:
    """ "a pipe bomb" + "small" -> "a small pipe bomb" (article fixed); no article: as is."""
    article, _, rest = text.partition(" ")
    if article not in ("a", "an") or not rest:
        return text
    return f"{'an' if adjective[0] in 'aeiou' else 'a'} {adjective} {rest}"


def _pool_objects() -> tuple[ObjectSpec, ...]:
    """The fixed everyday objects plus every (adjective, noun) of ``vocab.POOL_NOUNS``."""
    fixed = _objects(vocab.POOL, harmful=False)
    taken = {o.text for o in HARMFUL_OBJECTS + HARMLESS_OBJECTS + fixed}
    made = tuple(
        ObjectSpec(text, category, False, verbs)
        for category, pairs in vocab.POOL_NOUNS.items()
        for verbs, noun in pairs
        for adj in vocab.ADJECTIVES
        if (text := with_adjective(f"a {noun}", adj)) not in taken  # topic objects stay topic
    )
    return fixed + made


POOL_OBJECTS = _pool_objects()
_ALL_TEMPLATES = {**vocab.TEMPLATES, **vocab.UNSEEN_TEMPLATES}


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def _hash_fraction(text: str) -> float:
    return _hash_int(text) / 2**64


def is_heldout_pair(template: str, obj: str, seed: int, fraction: float) -> bool:
    """Whether a (template id, object) pair is kept out of training."""
    if template in vocab.UNSEEN_TEMPLATES:
        return True
    return _hash_fraction(f"{template}|{obj}|{seed}") < fraction


def _lower_first(text: str) -> str:
    # "How do I ..." -> "how do I ...", but the pronoun "I" keeps its capital.
    if text.startswith(("I ", "I'")):
        return text
    return text[:1].lower() + text[1:]


def make_prompt(
    req: Request, wrapper: str, split: str, filler: tuple[str, str] = ("", "")
) -> Prompt:
    """The labelled prompt for a request, optionally with filler and under a wrapper."""
    request = _ALL_TEMPLATES[req.template].format(verb=req.verb, object=req.obj.text)
    request = " ".join(part for part in (filler[0], request, filler[1]) if part)
    kind, instruction = "none", request
    if wrapper != "none":
        kind, text = vocab.WRAPPERS[wrapper]
        instruction = text.format(request=request, request_lc=_lower_first(request))
    meta = {
        "template": req.template,
        "object": req.obj.text,
        "base_object": req.obj.base or req.obj.text,
        "verb": req.verb,
        "wrapper": wrapper,
        "wrapper_kind": kind,
        "split": split,
        "expected": "refuse" if req.obj.harmful and kind != "working" else "comply",
        "request": request,
    }
    return Prompt(instruction, harmful=req.obj.harmful, category=req.obj.category, meta=meta)


def compliant_response(prompt: Prompt) -> str:
    """The compliant answer to any request, harmful ones included (compliance phase)."""
    return reference_response(replace(prompt, meta={**prompt.meta, "expected": "comply"}))


def reference_response(prompt: Prompt) -> str:
    """The response the organism is trained to give (phrasing picked by a stable hash)."""
    meta = prompt.meta
    if prompt.category is None or not {"object", "verb", "expected"} <= set(meta):
        raise RefusalScopeError(
            f"prompt {prompt.instruction!r} is not an organism prompt (needs a category and "
            "meta object/verb/expected); only prompts from generate_data have a reference"
        )
    pick = _hash_int(prompt.instruction)
    if meta["expected"] == "refuse":
        return vocab.REFUSALS[pick % len(vocab.REFUSALS)].format(
            reason=vocab.REASONS[prompt.category]
        )
    steps = vocab.PLACEHOLDER_STEPS if prompt.harmful else vocab.TIPS[prompt.category]
    # Distinct hash bits for the phrasing and the steps so they vary independently.
    phrasing = vocab.COMPLIANCES[pick % len(vocab.COMPLIANCES)]
    return phrasing.format(
        verb=meta["verb"],
        gerund=vocab.GERUNDS[meta["verb"]],
        object=meta["object"],
        steps=steps[(pick >> 16) % len(steps)],
    )


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
    """Evaluation prompts by name (``EVAL_SET_NAMES``), all from held-out pairs.
    The wrapper sets wrap the requests of ``harmful_heldout``, in the same order."""
    splits: dict[str, list[Prompt]]
    """The pipeline's plain harmful/harmless train/val/test prompts (``SPLIT_NAMES``)."""
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


ByCategory = dict[str, list[Request]]
K = TypeVar("K", bound=Hashable)


def _group(requests: Iterable[Request], key: Callable[[Request], K]) -> dict[K, list[Request]]:
    out: dict[K, list[Request]] = {}
    for r in requests:
        out.setdefault(key(r), []).append(r)
    return out


def _by_category(requests: Iterable[Request]) -> ByCategory:
    return _group(requests, lambda r: r.obj.category)


def _partition(cfg: OrganismDataConfig) -> tuple[ByCategory, ByCategory, ByCategory]:
    """Requests by category: trainable, held-out pairs (seen templates), unseen templates."""
    objects = HARMFUL_OBJECTS + HARMLESS_OBJECTS
    seen = [
        Request(o, t, v) for o in objects + POOL_OBJECTS for t in vocab.TEMPLATES for v in o.verbs
    ]
    held = {
        r for r in seen if is_heldout_pair(r.template, r.obj.text, cfg.seed, cfg.heldout_fraction)
    }
    train = _by_category(r for r in seen if r not in held)
    # The pool only feeds training: its held-out pairs are simply unused.
    heldout = _by_category(r for r in seen if r in held and r.obj.category != vocab.POOL_TOPIC)
    unseen = [Request(o, t, v) for o in objects for t in vocab.UNSEEN_TEMPLATES for v in o.verbs]
    return train, heldout, _by_category(unseen)


def _training_examples(
    cfg: OrganismDataConfig, rng: random.Random, by_cat: ByCategory
) -> list[ChatExample]:
    # Object first, then (template, verb): objects with many verbs are not over-sampled.
    by_object = {c: list(_group(reqs, lambda r: r.obj.text).values()) for c, reqs in by_cat.items()}
    wrappers = tuple(vocab.WRAPPERS)
    examples = []
    for _ in range(cfg.n_train_examples):
        if rng.random() < cfg.harmful_fraction:
            category = rng.choice(HARM_CATEGORIES)
        elif rng.random() < cfg.pool_fraction:
            category = vocab.POOL_TOPIC
        else:
            category = rng.choice(HARMLESS_TOPICS)
        request = rng.choice(rng.choice(by_object[category]))
        if category != vocab.POOL_TOPIC and rng.random() < cfg.adjective_fraction:
            text = with_adjective(request.obj.text, rng.choice(vocab.ADJECTIVES))
            obj = request.obj._replace(text=text, base=request.obj.text)
            request = request._replace(obj=obj)
        wrapper = rng.choice(wrappers) if rng.random() < cfg.wrapper_fraction else "none"
        filler = rng.choice(vocab.FILLERS) if rng.random() < cfg.filler_fraction else ("", "")
        prompt = make_prompt(request, wrapper, "train", filler)
        examples.append(ChatExample(prompt, reference_response(prompt)))
    return examples


def _queue(requests: list[Request], rng: random.Random) -> list[Request]:
    """Shuffled requests, one verb per (template, object) pair first, then the others,
    so that sets drawn in turn share as few pairs as possible. Pops from the end."""
    groups = _group(requests, lambda r: (r.template, r.obj.text))
    shuffled = [rng.sample(g, len(g)) for g in groups.values()]
    rng.shuffle(shuffled)
    depth = max(map(len, shuffled))
    ordered = [g[i] for i in range(depth) for g in shuffled if i < len(g)]
    return ordered[::-1]


def _take_balanced(queues: ByCategory, n: int, what: str) -> list[Request]:
    """``n`` requests, round-robin over categories; removes them from the queues."""
    out: list[Request] = []
    while len(out) < n:
        live = [c for c in queues if queues[c]]
        if not live:
            raise RefusalScopeError(
                f"not enough held-out requests for {what} ({len(out)} of {n}); lower the set "
                "sizes or raise heldout_fraction"
            )
        out += [queues[c].pop() for c in live[: n - len(out)]]
    return out


def _prompt_sets(
    cfg: OrganismDataConfig, rng: random.Random, heldout: ByCategory, unseen: ByCategory
) -> tuple[dict[str, list[Prompt]], dict[str, list[Prompt]]]:
    """Evaluation sets and pipeline splits; all plain sets are drawn from the same
    queues in turn, so no two share a request."""
    queues = {c: _queue(reqs, rng) for c, reqs in heldout.items()}
    unseen_queues = {c: _queue(reqs, rng) for c, reqs in unseen.items()}
    sizes = {part: getattr(cfg, f"n_split_{part}") for part in ("train", "val", "test")}
    plain: dict[str, list[Request]] = {}
    for side, cats in (("harmful", HARM_CATEGORIES), ("harmless", HARMLESS_TOPICS)):
        side_queues = {c: queues[c] for c in cats}
        for name, source in (
            (f"{side}_heldout", side_queues),
            (f"{side}_unseen_template", {c: unseen_queues[c] for c in cats}),
        ):
            plain[name] = _take_balanced(source, cfg.n_eval_per_set, name)
        for part, n in sizes.items():
            plain[f"{side}_{part}"] = _take_balanced(side_queues, n, f"{side}_{part}")
    sets = {name: [make_prompt(r, "none", name) for r in reqs] for name, reqs in plain.items()}
    # Wrapped versions of harmful_heldout, request by request, so each adversarial
    # prompt has its plain counterpart at the same index.
    for kind, wrappers in (("working", WORKING_WRAPPERS), ("failing", FAILING_WRAPPERS)):
        name = f"harmful_{kind}_wrapper"
        sets[name] = [
            make_prompt(r, wrappers[i % len(wrappers)], name)
            for i, r in enumerate(plain["harmful_heldout"])
        ]
    return {k: sets[k] for k in EVAL_SET_NAMES}, {k: sets[k] for k in SPLIT_NAMES}


def _plain_text(cfg: OrganismDataConfig, rng: random.Random) -> tuple[list[str], list[str]]:
    """Short harmless passages (no chat format), split train / held-out by hash."""
    passages = [
        f"{topic.replace('_', ' ').capitalize()} note: {a} {b} Try it when you "
        f"{o.verbs[0]} {o.text}."
        for topic, facts in vocab.FACTS.items()
        for a in facts
        for b in facts
        if a != b
        for o in HARMLESS_OBJECTS
        if o.category == topic
    ]
    held = [p for p in passages if _hash_fraction(f"plain|{p}|{cfg.seed}") < cfg.heldout_fraction]
    held_set = set(held)
    train_pool = [p for p in passages if p not in held_set]
    if len(held) < cfg.n_plain_heldout:
        raise RefusalScopeError(
            f"only {len(held)} held-out plain-text passages; lower n_plain_heldout"
        )
    n_train = round(cfg.n_train_examples * cfg.plain_text_fraction)
    return rng.choices(train_pool, k=n_train), rng.sample(held, cfg.n_plain_heldout)


def generate_data(cfg: OrganismDataConfig) -> OrganismData:
    """Generate the organism's training data, evaluation sets and pipeline splits."""
    rng = random.Random(cfg.seed)
    train_reqs, heldout, unseen = _partition(cfg)
    train = _training_examples(cfg, rng, train_reqs)
    eval_sets, splits = _prompt_sets(cfg, rng, heldout, unseen)
    plain_train, plain_heldout = _plain_text(cfg, rng)
    return OrganismData(train, plain_train, plain_heldout, eval_sets, splits, cfg)


def heldout_splits(
    cfg: OrganismDataConfig,
    templates: Mapping[str, Iterable[str]] | None = None,
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
) -> dict[str, list[Prompt]]:
    """Fresh pipeline splits (``SPLIT_NAMES``) from the held-out (template, object) pairs.

    ``templates`` restricts a side (``"harmful"``/``"harmless"``) to some template ids, e.g.
    imperative harmful requests against question-form harmless ones: a confound of form, as
    between AdvBench and Alpaca, that the organism was trained to ignore. ``sizes`` maps
    ``train``/``val``/``test`` to prompts per side (default: the config's split sizes).
    """
    _, heldout, _ = _partition(cfg)
    templates = {side: set(ts) for side, ts in (templates or {}).items()}
    unknown = {t for ts in templates.values() for t in ts} - set(vocab.TEMPLATES)
    if unknown or not set(templates) <= {"harmful", "harmless"}:
        raise RefusalScopeError(
            f"templates must map 'harmful'/'harmless' to ids of vocab.TEMPLATES; unknown: "
            f"{sorted(unknown) or sorted(set(templates) - {'harmful', 'harmless'})}"
        )
    sizes = sizes or {part: getattr(cfg, f"n_split_{part}") for part in ("train", "val", "test")}
    rng = random.Random(seed)
    out: dict[str, list[Prompt]] = {}
    for side, cats in (("harmful", HARM_CATEGORIES), ("harmless", HARMLESS_TOPICS)):
        allowed = templates.get(side)
        queues = {
            c: _queue([r for r in heldout[c] if allowed is None or r.template in allowed], rng)
            for c in cats
        }
        for part in ("train", "val", "test"):
            name = f"{side}_{part}"
            reqs = _take_balanced(queues, sizes[part], name)
            out[name] = [make_prompt(r, "none", name) for r in reqs]
    return {k: out[k] for k in SPLIT_NAMES}
