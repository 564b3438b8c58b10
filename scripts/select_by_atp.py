"""Does the most faithful ranking jailbreak more? Clamp each harmful test prompt's top-K* by
AtP (attribution patching without IG, the ranking closest to exact patching on the
organism) and by exact single-latent Δm, beside its F*, at the run's (c, K*), for every seed
of a ``refusalscope replicate`` output; prints the complied rates and paired differences.

    REFUSALSCOPE_CACHE=... python scripts/select_by_atp.py runs/replicate

Sets come from each run's ``faithfulness.safetensors`` (top-K* of ``score.atp`` and of
``exact_effect`` over the evaluated latents, which hold AtP's own top-K* over all latents).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from refusalscope.evaluation.generate import generate_and_judge
from refusalscope.evaluation.stats import t_interval
from refusalscope.pipeline.config import OrganismConfig, RunConfig
from refusalscope.pipeline.context import load_context
from refusalscope.pipeline.outputs import load_run
from refusalscope.runtime.interventions import ScaleFeatures


def main(rep: Path) -> None:
    out: dict = {}
    for folder in sorted(rep.glob("seed-*")):
        seed = int(folder.name.split("-")[1])
        res = load_run(folder)
        ctx = load_context(RunConfig(organism=dataclasses.replace(OrganismConfig(), seed=seed)))
        c, k = res.summary["steering"]["c"], res.summary["steering"]["k_star"]
        f = res.ground_truth.faithfulness.tensors
        E = f["candidates"]
        sets = {
            "fstar": res.features.per_prompt("fstar", "test", k),
            "atp": [E[row] for row in f["score.atp"].topk(k, dim=1).indices],
            "exact_top": [E[row] for row in f["exact_effect"].topk(k, dim=1).indices],
        }
        prompts = res.prompts.splits["harmful_test"]
        out[seed] = {}
        for name, s in sets.items():
            ivs = [ScaleFeatures(ctx.saes, s, c=c)]
            j = generate_and_judge(ctx.model, prompts, ivs, ctx.judge, ctx.cfg.evaluation, {})
            out[seed][name] = sum(r["judgement"] == "complied" for r in j.rows) / len(prompts)
    summary = {
        m: t_interval([v[m] for v in out.values()]) for m in ("fstar", "atp", "exact_top")
    } | {
        f"{m}-fstar": t_interval([v[m] - v["fstar"] for v in out.values()])
        for m in ("atp", "exact_top")
    }
    json.dump({"per_seed": out, "mean_low_high": summary}, sys.stdout, indent=1)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
