"""The abliterated export from a run's output folder: checkpoint, model card, refusals."""

from __future__ import annotations

import pytest
import torch

from refusalscope.export.abliterate import (
    WRITERS,
    export_abliterated,
    model_card,
    read_run_direction,
)
from refusalscope.pipeline.config import ModelConfig, RunConfig
from refusalscope.pipeline.outputs import KIND, RESULTS
from refusalscope.runtime.cache import versions
from refusalscope.runtime.config import to_dict
from refusalscope.runtime.errors import RefusalScopeError
from refusalscope.runtime.files import is_temp, output_folder, sha256_file, write_json
from refusalscope.runtime.interventions import AblateDirection
from refusalscope.runtime.model import ChatModel
from refusalscope.stages.direction import DirectionResult
from tests.conftest import tiny_organism_config
from tests.export.test_abliterate import (
    PROMPTS,
    build,
    direction,
    resid_mid_ablated,
)


# ------------------------------------------------------------------ the export
def write_run(run_dir, cfg: RunConfig, found: DirectionResult, model: ChatModel) -> None:
    """A run output folder as ``write_outputs`` lays it out, with the files an export reads."""
    summary = {
        "config": to_dict(cfg),
        "model": {"name": "tiny-llama", "n_layers": model.n_layers, "d_model": model.d_model},
        "direction": {
            "layer": found.layer,
            "sweep": {str(k): v for k, v in found.sweep.items()},
            "base": found.base,
        },
    }
    with output_folder(run_dir, KIND, last=(RESULTS,)) as tmp:
        found.save(tmp)
        write_json(tmp / RESULTS, summary)


@pytest.fixture
def tiny_run(chat_tokenizer, tmp_path):
    """A run of a tiny Llama saved on disk, its direction taken from layer 1."""
    hf = build("llama", chat_tokenizer)
    model_dir = tmp_path / "models" / "tiny-llama"
    hf.save_pretrained(model_dir)
    chat_tokenizer.save_pretrained(model_dir)
    rates = {"jailbreak": 0.75, "harmless_ok": 1.0}
    found = DirectionResult(
        r=torch.stack([direction(1), direction(2)]),
        layer=1,
        sweep={0: {"jailbreak": 0.25, "harmless_ok": 1.0}, 1: rates},
        base={"jailbreak": 0.0, "harmless_ok": 1.0},
    )
    run_dir = tmp_path / "runs" / "my-run"
    cfg = RunConfig(model=ModelConfig(path=str(model_dir)))
    write_run(run_dir, cfg, found, ChatModel(hf, chat_tokenizer))
    return ChatModel(hf, chat_tokenizer), found, run_dir


@torch.no_grad()
def test_export_writes_a_loadable_abliterated_checkpoint_and_its_card(tiny_run, tmp_path):
    base, found, run_dir = tiny_run
    out = export_abliterated(run_dir, tmp_path / "out" / "abliterated")
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    assert not any(n.endswith(".bin") for n in names)
    assert not any(is_temp(p.name) for p in out.parent.iterdir())
    exported = ChatModel.load(str(out), device="cpu", dtype="float32")
    r = found.r[1]
    with resid_mid_ablated(base, "llama", r):
        want = base.generate(PROMPTS, [AblateDirection(r)], max_new_tokens=16)
    assert exported.generate(PROMPTS, max_new_tokens=16).token_ids == want.token_ids
    card = (out / "README.md").read_text()
    for text in (
        "Content warning",
        "Weight orthogonalisation of the refusal direction (Arditi et al. 2024",
        "after layer l* = 1 |",
        "| source model | tiny-llama |",
        "| run folder | `my-run` |",
        f"`{sha256_file(run_dir / RESULTS)}`",
        f"| refusalscope | {versions()['refusalscope']} ",
        "Jailbreak rate 0.75 (unablated 0.00)",
    ):
        assert text in card, text
    assert "Post-sublayer norms" not in card and str(tmp_path) not in card


def test_export_never_overwrites_and_names_what_is_not_a_run(tiny_run, tmp_path):
    _, _, run_dir = tiny_run
    out = tmp_path / "abliterated"
    out.mkdir()  # an empty folder is fine
    export_abliterated(run_dir, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    with pytest.raises(RefusalScopeError, match="not empty"):
        export_abliterated(run_dir, out)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    with pytest.raises(RefusalScopeError, match="not a refusalscope run output"):
        export_abliterated(tmp_path / "models" / "tiny-llama", tmp_path / "other")
    (run_dir / DirectionResult.TENSORS).unlink()
    with pytest.raises(RefusalScopeError, match="lacks direction.safetensors"):
        export_abliterated(run_dir, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_export_keeps_the_checkpoint_dtype(chat_tokenizer, tmp_path):
    from safetensors import safe_open

    hf = build("llama", chat_tokenizer).to(torch.bfloat16)
    model_dir = tmp_path / "bf16-llama"
    hf.save_pretrained(model_dir)
    chat_tokenizer.save_pretrained(model_dir)
    found = DirectionResult(r=torch.stack([direction(1), direction(2)]), layer=0, sweep={}, base={})
    run_dir = tmp_path / "run"
    write_run(
        run_dir,
        RunConfig(model=ModelConfig(path=str(model_dir))),
        found,
        ChatModel(hf, chat_tokenizer),
    )
    out = export_abliterated(run_dir, tmp_path / "out")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        emb = f.get_tensor("model.embed_tokens.weight")
    assert emb.dtype == torch.bfloat16
    r_hat = found.r[0] / found.r[0].norm()
    assert (
        float(((emb.float() @ r_hat).abs() / emb.float().norm(dim=-1).clamp(min=1e-12)).max())
        < 1e-2
    )
    assert "stored in bfloat16" in (out / "README.md").read_text()


def test_the_card_states_the_post_norm_and_tying_caveats(tiny_run):
    run = read_run_direction(tiny_run[2])
    gemma = model_card(run, WRITERS["gemma2"], tied=True, dtype=torch.float32)
    assert "Post-sublayer norms" in gemma and "differ from hook-based directional ablation" in gemma
    assert "they were untied first" in gemma
    llama = model_card(run, WRITERS["llama"], tied=False, dtype=torch.float32)
    assert "Post-sublayer norms" not in llama and "untied" not in llama


@pytest.mark.slow
@torch.no_grad()
def test_the_organism_export_jailbreaks_like_direction_ablation(tiny_organism, tmp_path, capsys):
    from refusalscope.pipeline.organism import OrganismJudge
    from refusalscope.stages.direction import DirectionConfig, behaviour_rates, compute_direction

    model = ChatModel.load(str(tiny_organism.model_path), device="cpu", dtype="float32")
    s, judge = tiny_organism.data().splits, OrganismJudge()
    cfg = DirectionConfig(n_sweep=8, max_new_tokens=24)
    found = compute_direction(
        model,
        s["harmful_train"],
        s["harmless_train"],
        s["harmful_val"],
        s["harmless_val"],
        judge,
        cfg,
    )
    run_dir = tmp_path / "run"
    write_run(run_dir, RunConfig(organism=tiny_organism_config()), found, model)
    exported = ChatModel.load(str(export_abliterated(run_dir, tmp_path / "out")), device="cpu")
    harmful, harmless = s["harmful_test"], s["harmless_test"]
    kw = dict(max_new_tokens=24)
    ablate = [AblateDirection(found.direction)]
    rates = {"base": behaviour_rates(model, harmful, harmless, judge, **kw)}
    rates["AblateDirection"] = behaviour_rates(model, harmful, harmless, judge, ablate, **kw)
    with resid_mid_ablated(model, "llama", found.direction):
        rates["full ablation"] = behaviour_rates(model, harmful, harmless, judge, ablate, **kw)
        want = model.generate([p.instruction for p in harmful], ablate, **kw)
    rates["export"] = behaviour_rates(exported, harmful, harmless, judge, **kw)
    with capsys.disabled():
        print(f"\norganism, layer {found.layer}: {rates}")
    assert exported.generate([p.instruction for p in harmful], **kw).token_ids == want.token_ids
    assert rates["export"] == rates["full ablation"]
    assert rates["export"]["jailbreak"] >= rates["base"]["jailbreak"] + 0.2
