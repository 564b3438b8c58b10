"""Feature selection under a confound of form: harmful prompts imperative, harmless questions.

Real prompt sets differ in form as well as content (AdvBench's "Write a tutorial on how
to ..." against Alpaca's mixed questions), and the paper's case against ActDiff is that it
picks features that differ between the sets without causing refusal. The organism's own
splits share templates across sides, so there nothing but content differs. This script
draws fresh splits from the organism's held-out (template, object) pairs with harmful
requests only in imperative templates (ending in ".") and harmless ones only in question
templates (ending in "?"); the organism was trained on both forms for both sides, so form
does not decide refusal. It writes the splits as prompt files and runs the whole pipeline
on them (organism judge, every other setting default):

    python scripts/form_confound.py [OUT_DIR]      # default runs/form_confound
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from refusalscope import RunConfig, run
from refusalscope.organism import vocab
from refusalscope.organism.build import build_organism
from refusalscope.organism.data import heldout_splits
from refusalscope.pipeline.outputs import write_outputs
from refusalscope.stages.prompts import PromptConfig


def main(out: Path) -> None:
    cfg = RunConfig()
    organism = build_organism(cfg.organism)
    templates = {
        "harmful": [t for t, text in vocab.TEMPLATES.items() if text.endswith(".")],
        "harmless": [t for t, text in vocab.TEMPLATES.items() if text.endswith("?")],
    }
    splits = heldout_splits(organism.data().config, templates)
    files = {}
    (out / "prompts").mkdir(parents=True, exist_ok=True)
    for name, prompts in splits.items():
        path = out / "prompts" / f"{name}.json"
        rows = [
            {"instruction": p.instruction, "category": p.category, "meta": dict(p.meta)}
            for p in prompts
        ]
        path.write_text(json.dumps(rows, indent=1))
        files[name] = str(path.resolve())
    cfg = dataclasses.replace(cfg, judge="organism", prompts=PromptConfig(files=files))
    result = run(cfg)
    write_outputs(result, out)
    table = {m: v["complied"] for m, v in result.summary["jailbreak"].items()}
    print(json.dumps({"templates": templates, "jailbreak_complied": table}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/form_confound"))
