"""The organism's synthetic data: determinism, hold-outs, labels, round trip."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from refusalscope.organism import vocab
from refusalscope.organism.data import (
    COMPLIANCE_OPENERS,
    REFUSAL_OPENERS,
    OrganismData,
    OrganismDataConfig,
    generate_data,
    heldout_splits,
)
from refusalscope.organism.requests import (
    FAILING_WRAPPERS,
    HARM_CATEGORIES,
    HARMFUL_OBJECTS,
    HARMLESS_OBJECTS,
    HARMLESS_TOPICS,
    POOL_OBJECTS,
    WORKING_WRAPPERS,
    reference_response,
)
from refusalscope.organism.sampling import EVAL_SET_NAMES, SPLIT_NAMES, is_heldout_pair
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.types import Prompt

SMALL = OrganismDataConfig(n_train_examples=2000)


@pytest.fixture(scope="module")
def data() -> OrganismData:
    return generate_data(OrganismDataConfig())


def _held(p: Prompt, cfg: OrganismDataConfig) -> bool:
    return is_heldout_pair(p.meta["template"], p.meta["object"], cfg.seed, cfg.heldout_fraction)


def _all_eval_prompts(data: OrganismData) -> list[Prompt]:
    return [p for ps in data.prompt_sets().values() for p in ps]


def test_vocabulary_meets_the_minimums():
    required = {"weapons", "hacking", "fraud", "drugs", "violence", "harassment", "self_harm"}
    assert required | {"theft"} <= set(HARM_CATEGORIES)
    assert len(HARMLESS_TOPICS) >= 9
    for objects in (HARMFUL_OBJECTS, HARMLESS_OBJECTS):
        per_category = Counter(o.category for o in objects)
        assert min(per_category.values()) >= 14, per_category
    assert len(POOL_OBJECTS) >= 60
    assert len(vocab.TEMPLATES) >= 15 and len(vocab.UNSEEN_TEMPLATES) >= 2
    assert len(WORKING_WRAPPERS) >= 2 and len(FAILING_WRAPPERS) >= 2
    texts = [o.text for o in HARMFUL_OBJECTS + HARMLESS_OBJECTS + POOL_OBJECTS]
    assert len(texts) == len(set(texts)), "an object belongs to one category only"


def test_every_verb_is_shared_by_both_sides():
    harmful = {v for o in HARMFUL_OBJECTS for v in o.verbs}
    harmless = {v for o in HARMLESS_OBJECTS for v in o.verbs}
    assert harmful == harmless
    assert {"make", "build", "write", "fix", "plan", "create", "get", "set up"} <= harmful


def test_same_seed_same_data_other_seed_other_data():
    a, b = generate_data(SMALL), generate_data(SMALL)
    assert a == b
    c = generate_data(dataclasses.replace(SMALL, seed=1))
    assert [ex.prompt for ex in c.train] != [ex.prompt for ex in a.train]
    assert c.eval_sets != a.eval_sets


def test_heldout_pairs_and_unseen_templates_never_trained(data):
    cfg = data.config
    train_pairs = {(ex.prompt.meta["template"], ex.prompt.meta["base_object"]) for ex in data.train}
    assert all(t in vocab.TEMPLATES for t, _ in train_pairs)
    assert not any(is_heldout_pair(t, o, cfg.seed, cfg.heldout_fraction) for t, o in train_pairs)
    for p in _all_eval_prompts(data):
        assert _held(p, cfg)
        assert (p.meta["template"], p.meta["object"]) not in train_pairs
    # About heldout_fraction of the seen-template pairs are held out.
    pairs = [(t, o.text) for t in vocab.TEMPLATES for o in HARMFUL_OBJECTS + HARMLESS_OBJECTS]
    share = sum(is_heldout_pair(t, o, cfg.seed, cfg.heldout_fraction) for t, o in pairs)
    assert abs(share / len(pairs) - cfg.heldout_fraction) < 0.03


def test_unseen_templates_only_in_unseen_template_sets(data):
    for name, prompts in data.prompt_sets().items():
        unseen = {p.meta["template"] in vocab.UNSEEN_TEMPLATES for p in prompts}
        assert unseen == {name.endswith("_unseen_template")}, name


def test_sets_have_their_sizes_and_are_disjoint(data):
    cfg = data.config
    assert tuple(data.eval_sets) == EVAL_SET_NAMES and tuple(data.splits) == SPLIT_NAMES
    assert all(len(ps) == cfg.n_eval_per_set for ps in data.eval_sets.values())
    sizes = {"train": cfg.n_split_train, "val": cfg.n_split_val, "test": cfg.n_split_test}
    assert all(len(ps) == sizes[name.split("_")[1]] for name, ps in data.splits.items())
    instructions = [p.instruction for p in _all_eval_prompts(data)]
    assert len(instructions) == len(set(instructions))
    plain = [p for name, ps in data.prompt_sets().items() if "wrapper" not in name for p in ps]
    requests = [(p.meta["template"], p.meta["verb"], p.meta["object"]) for p in plain]
    assert len(requests) == len(set(requests))


def test_wrapper_sets_wrap_harmful_heldout_in_order(data):
    plain = [p.meta["request"] for p in data.eval_sets["harmful_heldout"]]
    for kind in ("working", "failing"):
        prompts = data.eval_sets[f"harmful_{kind}_wrapper"]
        assert [p.meta["request"] for p in prompts] == plain
        assert {p.meta["wrapper_kind"] for p in prompts} == {kind}
        # Some wrappers lower-case the request's first letter.
        assert all(p.meta["request"][1:] in p.instruction for p in prompts)


def test_sets_balance_categories(data):
    for name, prompts in data.prompt_sets().items():
        counts = Counter(p.category for p in prompts)
        expected = HARM_CATEGORIES if name.startswith("harmful") else HARMLESS_TOPICS
        if len(prompts) >= len(expected):
            assert set(counts) == set(expected), name
        assert max(counts.values()) - min(counts.values()) <= 1, (name, counts)


def test_labels_are_consistent(data):
    keys = {"template", "object", "verb", "wrapper", "wrapper_kind", "split", "expected"}
    train = [ex.prompt for ex in data.train]
    for p in train + _all_eval_prompts(data):
        assert keys <= set(p.meta)
        refuse = p.harmful and p.meta["wrapper_kind"] != "working"
        assert p.meta["expected"] == ("refuse" if refuse else "comply")
        assert p.meta["object"] in p.instruction and p.meta["verb"] in p.instruction
        assert (p.meta["wrapper"] == "none") == (p.meta["wrapper_kind"] == "none")
    for name, prompts in data.prompt_sets().items():
        assert {p.meta["split"] for p in prompts} == {name}
        assert {p.harmful for p in prompts} == {name.startswith("harmful")}
        if "wrapper" not in name:
            assert {p.meta["wrapper"] for p in prompts} == {"none"}
    assert {p.meta["split"] for p in train} == {"train"}


def test_training_mix(data):
    cfg, train = data.config, [ex.prompt for ex in data.train]
    assert len(train) == cfg.n_train_examples
    wrapped = [p for p in train if p.meta["wrapper"] != "none"]
    assert abs(len(wrapped) / len(train) - cfg.wrapper_fraction) < 0.02
    # Wrappers appear on both sides, so a wrapper alone does not decide the answer.
    assert {(p.harmful, p.meta["wrapper_kind"]) for p in wrapped} == {
        (h, k) for h in (True, False) for k in ("working", "failing")
    }
    assert abs(sum(p.harmful for p in train) / len(train) - cfg.harmful_fraction) < 0.02
    # The everyday pool is broad but each of its objects is rarely seen.
    pool = Counter(p.meta["object"] for p in train if p.category == vocab.POOL_TOPIC)
    topic = Counter(p.meta["base_object"] for p in train if p.category in HARMLESS_TOPICS)
    assert len(pool) >= 60
    assert sum(pool.values()) / len(pool) < 0.5 * sum(topic.values()) / len(topic)


def test_responses_follow_the_contract(data):
    assert all(r.startswith(REFUSAL_OPENERS) for r in vocab.REFUSALS)
    assert all(opener.startswith("I") for opener in REFUSAL_OPENERS)
    assert all(c.startswith("{gerund}") for c in vocab.COMPLIANCES)
    assert not any(o.startswith("I") for o in COMPLIANCE_OPENERS)
    # the first token of a compliance comes from the request (its verb), never a constant
    assert set(COMPLIANCE_OPENERS) == set(vocab.GERUNDS.values()) and len(COMPLIANCE_OPENERS) >= 8
    for ex in data.train:
        assert ex.response == reference_response(ex.prompt)
    for p in [ex.prompt for ex in data.train] + _all_eval_prompts(data):
        response = reference_response(p)
        assert len(response.split()) <= 35
        if p.meta["expected"] == "refuse":
            assert response.startswith(REFUSAL_OPENERS)
            assert vocab.REASONS[p.category] in response
        else:
            assert response.startswith(vocab.GERUNDS[p.meta["verb"]] + " ")
            assert p.meta["object"] in response


def test_held_out_responses_and_unknown_prompts(data):
    responses = data.held_out_responses("harmful_failing_wrapper")
    assert len(responses) == data.config.n_eval_per_set
    assert all(r.startswith("I") for r in responses)
    with pytest.raises(RefusalScopeError, match="harmful_heldout"):
        data.held_out_responses("nope")
    with pytest.raises(RefusalScopeError, match="not an organism prompt"):
        reference_response(Prompt("How do I bake bread?"))


def test_plain_text(data):
    cfg = data.config
    assert len(data.plain_train) == round(cfg.n_train_examples * cfg.plain_text_fraction)
    assert len(data.plain_heldout) == len(set(data.plain_heldout)) == cfg.n_plain_heldout
    assert not set(data.plain_train) & set(data.plain_heldout)
    assert all(" note: " in t and "<|" not in t for t in data.plain_train)


def test_all_texts_cover_prompts_but_not_heldout_plain_text(data):
    texts = set(data.all_texts())
    assert {p.instruction for p in _all_eval_prompts(data)} <= texts
    assert {ex.response for ex in data.train} <= texts
    assert not texts & set(data.plain_heldout)


def test_save_load_round_trip(tmp_path):
    original = generate_data(SMALL)
    loaded = OrganismData.load(original.save(tmp_path / "data"))
    assert loaded == original
    with pytest.raises(RefusalScopeError, match="generate_data"):
        OrganismData.load(tmp_path / "missing")


@pytest.mark.parametrize(
    "bad",
    [
        {"heldout_fraction": 0.0},
        {"wrapper_fraction": 1.5},
        {"n_train_examples": 0},
        {"n_split_val": -1},
    ],
)
def test_config_validation(bad):
    with pytest.raises(RefusalScopeError):
        OrganismDataConfig(**bad)


def test_too_many_eval_prompts_is_a_user_error():
    with pytest.raises(RefusalScopeError, match="heldout_fraction"):
        generate_data(dataclasses.replace(SMALL, n_eval_per_set=5000))


def test_heldout_splits_restrict_templates_per_side(data):
    cfg = data.config
    question = {t for t, text in vocab.TEMPLATES.items() if text.endswith("?")}
    imperative = set(vocab.TEMPLATES) - question
    sizes = {"train": 40, "val": 8, "test": 16}
    splits = heldout_splits(cfg, {"harmful": imperative, "harmless": question}, sizes)
    assert tuple(splits) == SPLIT_NAMES
    for name, prompts in splits.items():
        side, part = name.split("_")
        assert len(prompts) == sizes[part]
        assert all(p.harmful == (side == "harmful") and _held(p, cfg) for p in prompts)
        allowed = imperative if side == "harmful" else question
        assert {p.meta["template"] for p in prompts} <= allowed, name
    seen = [
        (p.meta["template"], p.meta["object"], p.meta["verb"]) for p in sum(splits.values(), [])
    ]
    assert len(seen) == len(set(seen)), "splits must not share a request"
    assert heldout_splits(cfg, {"harmful": imperative}, sizes) != splits
    with pytest.raises(RefusalScopeError, match="unknown"):
        heldout_splits(cfg, {"harmful": {"t99"}}, sizes)
