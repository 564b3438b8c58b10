"""Every stage result's ``save``/``load`` gives back what it was given."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from refusalscope.evaluation.generate import EvalResult
from refusalscope.evaluation.jailbreak import JailbreakResult
from refusalscope.evaluation.sweep import SweepResult
from refusalscope.runtime.types import Prompt
from refusalscope.stages.attribution import AttributionResult, Attributions
from refusalscope.stages.candidates import CandidateResult
from refusalscope.stages.direction import DirectionResult
from refusalscope.stages.features import FeatureSets
from refusalscope.stages.prompts import PromptSplits


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_same(a, b, where: str = "value") -> None:
    """Deep equality: tensors by dtype, shape and exact values; containers by structure."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), f"{where}: {type(b).__name__} is not a tensor"
        assert a.dtype == b.dtype, f"{where}: dtype {b.dtype} != {a.dtype}"
        assert a.shape == b.shape, f"{where}: shape {tuple(b.shape)} != {tuple(a.shape)}"
        assert torch.equal(a, b), f"{where}: values differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict), f"{where}: {type(b).__name__} is not a dict"
        assert set(a) == set(b), f"{where}: keys {sorted(b)} != {sorted(a)}"
        key_types = {k: type(k) for k in b}
        for k in a:
            assert key_types[k] is type(k), f"{where}: key {k!r} came back as {key_types[k]}"
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{where}: length differs"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif dataclasses.is_dataclass(a):
        assert type(a) is type(b), f"{where}: {type(b).__name__} != {type(a).__name__}"
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    else:
        assert type(a) is type(b) and a == b, f"{where}: {b!r} != {a!r}"


# ------------------------------------------------------------------------ prompts
def make_prompts() -> PromptSplits:
    splits = {
        "harmful_train": [
            Prompt("how to pick a lock", True, "crime", {"object": "lock", "template": 3}),
            Prompt("make a pipe bomb", True, None, {}),
        ],
        "harmless_train": [Prompt("bake bread", False, "cooking", {"tags": ["a", "b"]})],
        "harmful_test": [Prompt("unknown label", None, None, {"nested": {"x": 1.5}})],
        "harmless_test": [],
    }
    return PromptSplits(splits, {"harmful_train": 3, "harmless_train": 0}, 314, " I")


def test_prompts_round_trip(tmp_path: Path):
    p = make_prompts()
    p.save(tmp_path)
    back = PromptSplits.load(tmp_path)
    assert_same(p, back)
    assert back.splits == p.splits
    assert list(back.splits) == list(p.splits), "split order is kept"


def test_prompts_round_trip_without_refusal_token(tmp_path: Path):
    p = PromptSplits({"harmful_train": [Prompt("x", True)]})
    p.save(tmp_path)
    back = PromptSplits.load(tmp_path)
    assert_same(p, back)
    assert back.refusal_token is None and back.refusal_token_text is None


# ---------------------------------------------------------------------- direction
def make_direction(layer: int = 2) -> DirectionResult:
    return DirectionResult(
        r=torch.randn(4, 8, generator=gen(0)),
        layer=layer,
        sweep={
            0: {"jailbreak": 0.125, "harmless_ok": 0.9},
            2: {"jailbreak": 0.7, "harmless_ok": 1 / 3},
            3: {"jailbreak": 0.0, "harmless_ok": 0.1 + 0.2},
        },
        base={"jailbreak": 0.0625, "harmless_ok": 0.95},
    )


def test_direction_round_trip(tmp_path: Path):
    d = make_direction()
    d.save(tmp_path)
    back = DirectionResult.load(tmp_path)
    assert_same(d, back)
    assert type(back.layer) is int and all(type(k) is int for k in back.sweep)
    assert torch.equal(back.direction, d.r[2])


def test_direction_round_trip_keeps_layer_zero_and_bf16(tmp_path: Path):
    d = make_direction(layer=0)
    d.r = d.r.to(torch.bfloat16)
    d.save(tmp_path)
    assert_same(d, DirectionResult.load(tmp_path))


# --------------------------------------------------------------------- candidates
def test_candidates_round_trip(tmp_path: Path):
    c = CandidateResult(
        features=torch.tensor([[0, 5], [0, 17], [3, 2], [3, 40]]),
        cosine=torch.tensor([0.91, 0.5, -0.25, 0.125]),
    )
    c.save(tmp_path)
    assert_same(c, CandidateResult.load(tmp_path))


# -------------------------------------------------------------------- attribution
def make_attribution(n: int, seed: int, all_latents: bool) -> AttributionResult:
    g = gen(seed)
    cands = torch.tensor([[0, 1], [0, 7], [2, 3]])
    mask = torch.rand(n, 6, generator=g) > 0.4
    a = AttributionResult(
        candidates=cands,
        score=torch.randn(n, len(cands), generator=g),
        input_ids=torch.randint(0, 400, (n, 6), generator=g),
        position_mask=mask,
        jb_token=torch.randint(0, 400, (n,), generator=g),
        ref_token=42 + seed,
        metric_clean=torch.randn(n, generator=g),
        metric_patch=torch.randn(n, generator=g),
    )
    if all_latents:
        a.all_top = torch.randint(0, 9, (n, 4, 2), generator=g)
        a.all_top_score = torch.randn(n, 4, generator=g)
        a.all_mean = {0: torch.randn(12, generator=g), 2: torch.randn(12, generator=g)}
    return a


def test_attribution_round_trip_with_all_latents(tmp_path: Path):
    attr = Attributions(
        {"train": make_attribution(3, 0, True), "test": make_attribution(2, 1, True)}
    )
    attr.save(tmp_path)
    back = Attributions.load(tmp_path)
    assert_same(attr, back)
    assert back["train"].position_mask.dtype == torch.bool
    assert type(back["test"].ref_token) is int and back["test"].ref_token == 43


def test_attribution_round_trip_without_all_latents(tmp_path: Path):
    attr = Attributions({"train": make_attribution(2, 5, False)})
    attr.save(tmp_path)
    back = Attributions.load(tmp_path)
    assert_same(attr, back)
    assert back["train"].all_top is None and back["train"].all_top_score is None
    assert back["train"].all_mean == {}


def test_attribution_loads_only_its_own_files(tmp_path: Path):
    """Other safetensors in the folder (direction, features) are not read as splits."""
    make_direction().save(tmp_path)
    Attributions({"val": make_attribution(2, 2, False)}).save(tmp_path)
    assert set(Attributions.load(tmp_path).splits) == {"val"}


# ----------------------------------------------------------------------- features
METHODS = ("fstar", "cossim", "actdiff", "ap")


def make_features() -> FeatureSets:
    g = gen(3)

    def lists(n: int, k: int) -> list[torch.Tensor]:
        return [torch.randint(0, 50, (k, 2), generator=g) for _ in range(n)]

    return FeatureSets(
        prompt_sets={
            "fstar": {"train": lists(3, 5), "test": lists(2, 5)},
            "ap": {"train": lists(3, 4), "test": lists(2, 4)},
        },
        global_sets={m: torch.randint(0, 50, (6, 2), generator=g) for m in METHODS},
        global_scores={m: torch.randn(6, generator=g) for m in METHODS},
    )


def test_features_round_trip(tmp_path: Path):
    f = make_features()
    f.save(tmp_path)
    back = FeatureSets.load(tmp_path)
    assert_same(f, back)
    assert isinstance(back.prompt_sets["ap"]["test"], list)
    assert_same(back.per_prompt("fstar", "train", 2), f.per_prompt("fstar", "train", 2))
    assert_same(back.global_set("actdiff", 3), f.global_set("actdiff", 3))


# -------------------------------------------------------------------- evaluations
def test_eval_result_round_trip_with_rows(tmp_path: Path):
    table = {
        "fstar": {"n": 10, "complied": 0.3, "refused": 0.7},
        "note": None,
        "flags": [True, False],
    }
    rows = [
        {"method": "base", "prompt": "bake bread", "response": "Sure, “quotes” ✓", "ok": True},
        {"method": "fstar", "prompt": "x", "response": "line\nbreak", "value": 0.5},
    ]
    JailbreakResult(table, rows).save(tmp_path)
    back = JailbreakResult.load(tmp_path)
    assert type(back) is JailbreakResult
    assert back.table == table and back.rows == rows


def test_eval_result_with_no_rows_writes_an_empty_file(tmp_path: Path):
    EvalResult({"a": 1}).save(tmp_path)
    assert (tmp_path / EvalResult.ROWS).read_text() == ""
    assert EvalResult.load(tmp_path) == EvalResult({"a": 1}, [])


def test_eval_result_converts_tensors_and_paths_to_json(tmp_path: Path):
    """Tensors become numbers/lists and paths become strings in the saved JSON."""
    table = {"rate": torch.tensor(0.25), "ids": torch.tensor([1, 2]), "path": Path("/a/b")}
    EvalResult(table, [{"score": torch.tensor(2.5)}]).save(tmp_path)
    back = EvalResult.load(tmp_path)
    assert back.table == {"rate": 0.25, "ids": [1, 2], "path": "/a/b"}
    assert back.rows == [{"score": 2.5}]
    json.loads((tmp_path / EvalResult.FILE).read_text())


def test_sweep_round_trip_keeps_the_best_cell_typed(tmp_path: Path):
    s = SweepResult({"-1.0": {"10": {"n": 4, "complied": 0.5}}}, (-1.0, 10))
    s.save(tmp_path)
    back = SweepResult.load(tmp_path)
    assert back == s and type(back.best[1]) is int


def test_saving_again_replaces_the_previous_result(tmp_path: Path):
    """A second save into the same folder replaces the first and leaves no temp files."""
    make_direction(layer=3).save(tmp_path)
    second = make_direction(layer=0)
    second.r = second.r * 2
    second.sweep = {0: {"jailbreak": 1.0, "harmless_ok": 1.0}}
    second.save(tmp_path)
    assert_same(second, DirectionResult.load(tmp_path))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
