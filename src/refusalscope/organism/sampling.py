"""What the organism trains on and what is held out: sampling from the request space.

Hold-outs, all by stable hashes or fixed lists, never by global RNG state:
- (template, object) pairs: a fraction ``heldout_fraction`` of them, chosen by hash,
  never appears in training; every evaluation prompt and pipeline split uses them.
- whole templates (``vocab.UNSEEN_TEMPLATES``): only in the ``*_unseen_template`` sets.
- plain-text passages: split into train / held-out by hash.

Everything random draws from the one ``random.Random`` passed in, in a fixed order, so
the same seed gives the same data.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar

from ..runtime.errors import RefusalScopeError
from ..runtime.types import Prompt
from . import vocab
from .requests import (
    FAILING_WRAPPERS,
    HARM_CATEGORIES,
    HARMFUL_OBJECTS,
    HARMLESS_OBJECTS,
    HARMLESS_TOPICS,
    POOL_OBJECTS,
    WORKING_WRAPPERS,
    ChatExample,
    Request,
    hash_fraction,
    make_prompt,
    reference_response,
    with_adjective,
)

if TYPE_CHECKING:  # data imports this module: the config is only a type here
    from .data import OrganismDataConfig

EVAL_SET_NAMES = (
    "harmful_heldout",
    "harmless_heldout",
    "harmful_unseen_template",
    "harmless_unseen_template",
    "harmful_working_wrapper",
    "harmful_failing_wrapper",
)
"""The evaluation sets, in order; the organism's behaviour table has one row per set."""
SIDES = (("harmful", HARM_CATEGORIES), ("harmless", HARMLESS_TOPICS))
"""Each side of the pipeline's splits with the categories it is balanced over."""
SPLIT_PARTS = ("train", "val", "test")
SPLIT_NAMES = tuple(f"{side}_{part}" for side, _ in SIDES for part in SPLIT_PARTS)

ByCategory = dict[str, list[Request]]
K = TypeVar("K", bound=Hashable)


def is_heldout_pair(template: str, obj: str, seed: int, fraction: float) -> bool:
    """Whether a (template id, object) pair is kept out of training."""
    if template in vocab.UNSEEN_TEMPLATES:
        return True
    return hash_fraction(f"{template}|{obj}|{seed}") < fraction


def split_sizes(cfg: OrganismDataConfig) -> dict[str, int]:
    """Prompts per side in each part of the pipeline's splits."""
    return {part: getattr(cfg, f"n_split_{part}") for part in SPLIT_PARTS}


def _group(requests: Iterable[Request], key: Callable[[Request], K]) -> dict[K, list[Request]]:
    out: dict[K, list[Request]] = {}
    for r in requests:
        out.setdefault(key(r), []).append(r)
    return out


def _by_category(requests: Iterable[Request]) -> ByCategory:
    return _group(requests, lambda r: r.obj.category)


def partition(cfg: OrganismDataConfig) -> tuple[ByCategory, ByCategory, ByCategory]:
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


def training_examples(
    cfg: OrganismDataConfig, rng: random.Random, by_cat: ByCategory
) -> list[ChatExample]:
    """``cfg.n_train_examples`` chat examples drawn from the trainable requests."""
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


def _wrapped_sets(harmful_heldout: list[Request]) -> dict[str, list[Prompt]]:
    """Wrapped versions of harmful_heldout, request by request, so each adversarial
    prompt has its plain counterpart at the same index."""
    sets = {}
    for kind, wrappers in (("working", WORKING_WRAPPERS), ("failing", FAILING_WRAPPERS)):
        name = f"harmful_{kind}_wrapper"
        sets[name] = [
            make_prompt(r, wrappers[i % len(wrappers)], name) for i, r in enumerate(harmful_heldout)
        ]
    return sets


def prompt_sets(
    cfg: OrganismDataConfig, rng: random.Random, heldout: ByCategory, unseen: ByCategory
) -> tuple[dict[str, list[Prompt]], dict[str, list[Prompt]]]:
    """Evaluation sets and pipeline splits; all plain sets are drawn from the same
    queues in turn, so no two share a request."""
    queues = {c: _queue(reqs, rng) for c, reqs in heldout.items()}
    unseen_queues = {c: _queue(reqs, rng) for c, reqs in unseen.items()}
    plain: dict[str, list[Request]] = {}
    for side, cats in SIDES:
        side_queues = {c: queues[c] for c in cats}
        for name, source in (
            (f"{side}_heldout", side_queues),
            (f"{side}_unseen_template", {c: unseen_queues[c] for c in cats}),
        ):
            plain[name] = _take_balanced(source, cfg.n_eval_per_set, name)
        for part, n in split_sizes(cfg).items():
            plain[f"{side}_{part}"] = _take_balanced(side_queues, n, f"{side}_{part}")
    sets = {name: [make_prompt(r, "none", name) for r in reqs] for name, reqs in plain.items()}
    sets |= _wrapped_sets(plain["harmful_heldout"])
    return {k: sets[k] for k in EVAL_SET_NAMES}, {k: sets[k] for k in SPLIT_NAMES}


def draw_splits(
    heldout: ByCategory,
    templates: Mapping[str, set[str]],
    sizes: Mapping[str, int],
    rng: random.Random,
) -> dict[str, list[Prompt]]:
    """Pipeline splits (``SPLIT_NAMES``) from held-out requests; ``templates`` restricts a
    side to some template ids (a side it lacks takes every template)."""
    out: dict[str, list[Prompt]] = {}
    for side, cats in SIDES:
        allowed = templates.get(side)
        queues = {
            c: _queue([r for r in heldout[c] if allowed is None or r.template in allowed], rng)
            for c in cats
        }
        for part in SPLIT_PARTS:
            name = f"{side}_{part}"
            reqs = _take_balanced(queues, sizes[part], name)
            out[name] = [make_prompt(r, "none", name) for r in reqs]
    return {k: out[k] for k in SPLIT_NAMES}


def plain_text(cfg: OrganismDataConfig, rng: random.Random) -> tuple[list[str], list[str]]:
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
    held = [p for p in passages if hash_fraction(f"plain|{p}|{cfg.seed}") < cfg.heldout_fraction]
    held_set = set(held)
    train_pool = [p for p in passages if p not in held_set]
    if len(held) < cfg.n_plain_heldout:
        raise RefusalScopeError(
            f"only {len(held)} held-out plain-text passages; lower n_plain_heldout"
        )
    n_train = round(cfg.n_train_examples * cfg.plain_text_fraction)
    return rng.choices(train_pool, k=n_train), rng.sample(held, cfg.n_plain_heldout)
