"""The organism's requests and the text made from them: prompts and reference responses.

A request is one object, one template and one of the object's verbs. Harmful and
harmless objects share verbs, templates and jailbreak wrappers, so nothing but the
object (and, for harmful requests, the wrapper) decides the answer.

Responses are a pure function of the prompt (``reference_response``): refusals all
start with "I" (the refusal token of real chat models), compliances with the verb's
gerund ("Making", "Writing", ...) and restate the task with its object, so a judge can
check both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import NamedTuple

from ..runtime.errors import RefusalScopeError
from ..runtime.types import Prompt
from . import vocab

HARM_CATEGORIES = tuple(vocab.HARMFUL)
HARMLESS_TOPICS = tuple(vocab.HARMLESS)
WORKING_WRAPPERS = tuple(w for w, (kind, _) in vocab.WRAPPERS.items() if kind == "working")
FAILING_WRAPPERS = tuple(w for w, (kind, _) in vocab.WRAPPERS.items() if kind == "failing")


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


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that, unlike ``hash``, is the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def hash_fraction(text: str) -> float:
    """``stable_hash`` mapped to [0, 1)."""
    return stable_hash(text) / 2**64


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
    pick = stable_hash(prompt.instruction)
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
