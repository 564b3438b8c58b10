"""``refusalscope bench``: the fast paths measured side by side with their references.

* ``laig``: SAE-free LA-IG vs the SAE-in-the-loop reference (``reference.laig_reference``)
  on the organism's SAEs and on synthetic JumpReLU SAEs of growing width attached to
  the organism's layers: error, time and peak tensor memory ratios, and our IG step
  against a bare forward+backward of the model.
* ``clamp_generate``: greedy generation with a 20-feature ``ScaleFeatures`` vs hook-free
  generation vs clamping by full encode/decode (``reference.FullClamp``), per width, with
  ``c = 1`` so that all three generate the same tokens (same number of decoding steps).
* ``faithfulness``: exact patching of the candidate pool (latents·prompts per second; a
  patched row against a plain forward row) and the all-latent sample's wall time.
* ``run``: wall time of ``refusalscope run`` on the organism, cold and warm.

Every ratio is measured in one process, in one run, on the same inputs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .evaluation.patching import all_latent_top, exact_effects, latent_values
from .pipeline.organism import build_organism
from .runtime.hooks import EMBED, EditContext, Intervention
from .runtime.interventions import ScaleFeatures
from .runtime.model import ChatModel
from .runtime.saes import SAESet
from .stages.attribution import (
    AttributionConfig,
    _Mix,
    cache_runs,
    integrated_gradients,
    metric,
    score_latents,
)
from .stages.candidates import CandidateConfig, compute_candidates
from .stages.direction import diff_in_means
from .testing.reference import FullClamp, laig_reference

WIDTHS = (1024, 4096, 16384, 65536)


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    return statistics.median(_times(fn, repeats))


def _interleaved_times(
    fns: dict[str, Callable[[], Any]], repeats: int, warm_up: bool = True
) -> dict[str, list[float]]:
    """``repeats`` timings per variant, the variants run in turn within each round.

    For small overhead ratios: taking turns exposes every variant to the same drift of the
    machine (timing one variant's repeats after another's once showed a 1.5x "overhead"
    that vanished when interleaved), and the order rotates each round so no variant is
    always first after a slow one.
    """
    if warm_up:
        for fn in fns.values():
            fn()
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for i in range(repeats):
        for k in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - start)
    return times


def _paired_ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    """Median over rounds of ``num``'s time over ``den``'s time in the same round."""
    return statistics.median(a / b for a, b in zip(times[num], times[den], strict=True))


def _times(fn: Callable[[], Any], repeats: int, warm_up: bool = True) -> list[float]:
    return _interleaved_times({"fn": fn}, repeats, warm_up)["fn"]


class _PeakTracker(TorchDispatchMode):
    """Peak bytes of tensor storages created inside the block (CPU or GPU).

    Counts each new storage when an op returns it and uncounts it when it is freed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, tuple[weakref.ref, int]] = {}

    def _free(self, key: int) -> None:
        self.live -= self._refs.pop(key, (None, 0))[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key = id(st)
                if key in self._refs or st.nbytes() == 0:
                    continue
                ref = weakref.ref(st, lambda _, k=key: self._free(k))
                self._refs[key] = (ref, st.nbytes())
                self.live += st.nbytes()
                self.peak = max(self.peak, self.live)
        return out


def _peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak bytes of tensors allocated while ``fn`` runs."""
    with _PeakTracker() as tracker:
        fn()
    return tracker.peak


def synthetic_saes(
    d_model: int, layers: list[int], width: int, seed: int = 0, arch: str = "jumprelu"
) -> SAESet:
    """Random SAEs (unit decoder rows, sparse codes): JumpReLU, or TopK with k = 20."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig

    saes = {}
    gen = torch.Generator().manual_seed(seed)
    for l in layers:
        if arch == "topk":
            sae = TopKSAE(TopKSAEConfig(d_in=d_model, d_sae=width, k=20))
        else:
            sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_model, d_sae=width))
        with torch.no_grad():
            W = torch.randn(width, d_model, generator=gen)
            sae.W_dec.copy_(W / W.norm(dim=-1, keepdim=True))
            sae.W_enc.copy_(sae.W_dec.T)
            sae.b_enc.zero_()
            sae.b_dec.zero_()
            if arch != "topk":
                sae.threshold.fill_(2.0)
        saes[l] = sae
    return SAESet._made(saes, {l: f"synthetic-{arch}-{width}" for l in layers})


class _Leaf(Intervention):
    """Makes the embedding output a grad-requiring leaf (a bare forward+backward)."""

    def __init__(self) -> None:
        self.leaf: torch.Tensor | None = None

    def sites(self, n_layers: int) -> set[int]:
        return {EMBED}

    def edit(self, site: int, h: torch.Tensor, ctx: EditContext) -> torch.Tensor:
        self.leaf = h.detach().requires_grad_(True)
        return self.leaf


def _setup(quick: bool):
    organism = build_organism()
    model = ChatModel.load(str(organism.model_path), device="cpu", dtype="float32")
    data = organism.data()
    harmful = [p.instruction for p in data.splits["harmful_train"]]
    harmless = [p.instruction for p in data.splits["harmless_train"]]
    r = diff_in_means(model, harmful[:64], harmless[:64])
    layer = int(organism.manifest.get("direction_layer", model.n_layers // 2))
    ref = model.tokenizer("I", add_special_tokens=False)["input_ids"][0]
    n = 8 if quick else 16
    return organism, model, harmful[:n], r[layer], ref


def bench_laig(quick: bool) -> dict[str, Any]:
    organism, model, prompts, r, ref = _setup(quick)
    tokens = model.tokenize(prompts)
    cfg = AttributionConfig(ig_steps=10)
    layers = list(range(model.n_layers))
    repeats = 2 if quick else 3
    rows: dict[str, Any] = {}
    sources = [("organism", SAESet.from_folders(organism.sae_paths))]
    sources += [(str(w), synthetic_saes(model.d_model, layers, w)) for w in WIDTHS]
    for name, saes in sources:
        cands = compute_candidates(saes, r, CandidateConfig(k_per_layer=10)).features

        def ours(saes=saes, cands=cands) -> dict[int, torch.Tensor]:
            ig = integrated_gradients(model, tokens, layers, r, ref, cfg)
            return {l: score_latents(saes, ig, l, cands[cands[:, 0] == l, 1], r) for l in layers}

        def reference(saes=saes) -> dict[int, torch.Tensor]:
            return laig_reference(model, saes, tokens, r, ref, cfg)

        fast, slow = ours(), reference()
        err = max(
            float(
                (fast[l] - slow[l][:, cands[cands[:, 0] == l, 1]].detach()).abs().max()
                / slow[l].abs().max().clamp(min=1e-12)
            )
            for l in layers
        )
        t_ours, t_ref = _median_seconds(ours, repeats), _median_seconds(reference, repeats)
        m_ours, m_ref = _peak_bytes(ours), _peak_bytes(reference)
        rows[name] = {
            "d_sae": saes.d_sae(layers[0]),
            "max_rel_err": err,
            "seconds_ours": round(t_ours, 4),
            "seconds_reference": round(t_ref, 4),
            "time_ratio": round(t_ref / t_ours, 2),
            "peak_mem_ours_mb": round(m_ours / 2**20, 2),
            "peak_mem_reference_mb": round(m_ref / 2**20, 2),
            "peak_mem_ratio": round(m_ref / m_ours, 1),
            **_step_ratio(model, tokens, layers, r, ref, repeats * 3),
        }
    return {"prompts": len(prompts), "seq_len": tokens.input_ids.shape[1], "widths": rows}


def _step_ratio(model, tokens, layers, r, ref, repeats) -> dict[str, float]:
    """One of our IG steps vs a bare forward+backward of the model, same batch."""
    with torch.no_grad():
        ig = integrated_gradients(model, tokens, layers, r, ref, AttributionConfig(ig_steps=1))
    jb = ig.jb_token

    def step() -> None:
        mix = _Mix(ig.patch_in, 0.5, layers)
        with torch.enable_grad():
            m = metric(model.forward(tokens, [mix], last_only=True), jb, ref)
            torch.autograd.grad(m.sum(), [mix.outs[l] for l in layers])

    def bare() -> None:
        leaf = _Leaf()
        with torch.enable_grad():
            m = metric(model.forward(tokens, [leaf], last_only=True), jb, ref)
            torch.autograd.grad(m.sum(), [leaf.leaf])

    t_step, t_bare = _median_seconds(step, repeats), _median_seconds(bare, repeats)
    return {"ig_step_over_bare_fwd_bwd": round(t_step / t_bare, 3)}


def _n_tokens(gens) -> int:
    return sum(len(ids) for ids in gens.token_ids)


def _random_features(n_layers: int, width: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """``k`` random (layer, latent) pairs."""
    layers = torch.randint(0, n_layers, (k,), generator=gen)
    return torch.stack([layers, torch.randint(0, width, (k,), generator=gen)], dim=1)


def bench_clamp_generate(quick: bool) -> dict[str, Any]:
    organism, model, _, r, _ = _setup(quick)
    data = organism.data()
    prompts = [p.instruction for p in data.splits["harmful_test"]][: 64 if quick else 100]
    new_tokens = 48 if quick else 64
    layers = list(range(model.n_layers))
    repeats = 15 if quick else 21
    gen = torch.Generator().manual_seed(0)
    rows: dict[str, Any] = {}
    sources = [("organism", SAESet.from_folders(organism.sae_paths))]
    sources += [(str(w), synthetic_saes(model.d_model, layers, w)) for w in WIDTHS[1:]]
    for name, saes in sources:
        width = saes.d_sae(layers[0])
        feats = _random_features(len(layers), width, 20, gen)
        # c = 1: the clamps do all their work but leave the text unchanged, so every variant
        # generates the same tokens (a clamp that shortens or lengthens the answers would
        # otherwise change the number of decoding steps timed).
        # TopK encoders are not per-latent: the clamp must rank every pre-activation.
        topk = synthetic_saes(model.d_model, layers, width, arch="topk")
        variants = {
            "hook_free": [],
            "sparse_clamp": [ScaleFeatures(saes, feats, c=1.0)],
            "full_clamp": [FullClamp(saes, feats, scale=1.0)],
            "topk_clamp": [ScaleFeatures(topk, feats, c=1.0)],
        }

        def run(ivs: list) -> Any:
            return model.generate(prompts, ivs, max_new_tokens=new_tokens, desc=None)

        # Counting each variant's tokens is also its warm-up run.
        tokens = {k: _n_tokens(run(ivs)) for k, ivs in variants.items()}
        # The ratio that has a target is timed over many interleaved rounds, with a second
        # hook-free variant as an A/A control: its ratio to the first is the noise floor.
        times = _interleaved_times(
            {
                "hook_free": lambda: run([]),
                "sparse_clamp": lambda sparse=variants["sparse_clamp"]: run(sparse),
                "hook_free_again": lambda: run([]),
            },
            repeats,
            warm_up=False,
        )
        full = statistics.median(_times(lambda ivs=variants["full_clamp"]: run(ivs), 3, False))
        topk_s = statistics.median(_times(lambda ivs=variants["topk_clamp"]: run(ivs), 3, False))
        hook_free = statistics.median(times["hook_free"])
        rows[name] = {
            "d_sae": width,
            "generated_tokens": tokens,
            "seconds": {
                "hook_free": round(hook_free, 4),
                "sparse_clamp": round(statistics.median(times["sparse_clamp"]), 4),
                "full_clamp": round(full, 4),
                "topk_clamp": round(topk_s, 4),
            },
            "sparse_over_hook_free": round(_paired_ratio(times, "sparse_clamp", "hook_free"), 3),
            "aa_control": round(_paired_ratio(times, "hook_free_again", "hook_free"), 3),
            "full_over_hook_free": round(full / hook_free, 3),
            "topk_over_hook_free": round(topk_s / hook_free, 3),
        }
    return {"prompts": len(prompts), "max_new_tokens": new_tokens, "widths": rows}


def bench_run(quick: bool) -> dict[str, Any]:
    """``refusalscope run`` as a user runs it, in a fresh cache: cold, then warm."""
    env = dict(os.environ, TQDM_DISABLE="1")
    with tempfile.TemporaryDirectory() as tmp:
        env["REFUSALSCOPE_CACHE"] = str(Path(tmp) / "cache")
        if quick:  # reuse the organism built already: copy the user's organism cache in
            organism = build_organism()
            dest = Path(env["REFUSALSCOPE_CACHE"]) / "organism" / organism.folder.name
            dest.parent.mkdir(parents=True)
            os.symlink(organism.folder, dest)
        out = {}
        for phase in ("cold", "warm"):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "refusalscope", "run", "--out", str(Path(tmp) / "out")],
                env=env,
                check=True,
                capture_output=True,
            )
            out[f"{phase}_seconds"] = round(time.perf_counter() - start, 1)
        out["organism_built_in_cold_run"] = not quick
        if quick:
            out["organism_build_seconds"] = build_organism().manifest["build_seconds"]
            out["cold_with_organism_seconds"] = round(
                out["cold_seconds"] + out["organism_build_seconds"], 1
            )
    return out


def bench_faithfulness(quick: bool) -> dict[str, Any]:
    """Exact patching of the candidate pool (throughput in latents·prompts per second, and
    per patched row against a plain forward of the same prompts), and the all-latent
    sample's wall time, on the organism."""
    organism, model, prompts, r, ref = _setup(quick)
    saes = SAESet.from_folders(organism.sae_paths)
    tokens = model.tokenize(prompts)
    pool = compute_candidates(saes, r, CandidateConfig(k_per_layer=10)).features
    ig = cache_runs(model, tokens, saes.layers, r, ref)
    clean, patched = latent_values(saes, ig, pool, r)
    rows = int(((patched - clean).abs().amax(1) > 0).sum())
    repeats = 2 if quick else 3
    t_exact = _median_seconds(lambda: exact_effects(model, saes, ig, pool, r, ref), repeats)
    with torch.no_grad():
        t_fwd = _median_seconds(lambda: model.forward(tokens, [], last_only=True), repeats * 3)
    start, moved = time.perf_counter(), []
    for prompt in prompts[: 2 if quick else 8]:
        one = cache_runs(model, model.tokenize([prompt]), saes.layers, r, ref)
        moved.append(all_latent_top(model, saes, one, r, ref, 10)[2])
    return {
        "prompts": len(prompts),
        "pool": len(pool),
        "rows_patched": rows,
        "exact_seconds": round(t_exact, 3),
        "latent_prompts_per_second": round(len(prompts) * len(pool) / t_exact, 1),
        "forward_seconds": round(t_fwd, 4),
        "patched_row_over_forward_row": round((t_exact / rows) / (t_fwd / len(prompts)), 2),
        "all_latent_sample_seconds": round(time.perf_counter() - start, 2),
        "all_latent_sample": {"prompts": len(moved), "moved_mean": sum(moved) / len(moved)},
    }


def run_benchmarks(quick: bool, only: list[str] | None = None) -> dict[str, Any]:
    benches = {
        "laig": bench_laig,
        "clamp_generate": bench_clamp_generate,
        "faithfulness": bench_faithfulness,
        "run": bench_run,
    }
    torch.manual_seed(0)
    results: dict[str, Any] = {
        "quick": quick,
        "threads": torch.get_num_threads(),
        "machine": f"{os.cpu_count()} CPU cores",
    }
    for name, fn in benches.items():
        if only and name not in only:
            continue
        results[name] = fn(quick)
    return results


def write_results(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")
