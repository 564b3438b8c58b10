"""Jailbreak rate of every feature-selection method at small K* (c = 0), on the organism.

Where the default sweep picks K* >= 10 every method may contain the same dominant latent;
at K* = 1..5 the rankings themselves are compared. Usage:

    python scripts/kstar_curve.py [K ...]      # default K = 1 2 3 5 10
"""

from __future__ import annotations

import dataclasses
import json
import sys

from refusalscope import RunConfig, run
from refusalscope.evaluation.config import EvalConfig


def main(ks: list[int]) -> None:
    rows = {}
    for k in ks:
        ev = EvalConfig(
            k_star=k,
            c=0.0,
            use_sweep=False,
            sweep_c=(0.0,),
            sweep_k=(k,),
            n_sweep=8,
            n_induction=8,
            n_capability=8,
            induction_multiples=(1.0,),
            add_coeffs=(1.0,),
        )
        res = run(dataclasses.replace(RunConfig(), evaluation=ev))
        rows[k] = {m: v["complied"] for m, v in res.summary["jailbreak"].items()}
        rows[k]["global_fstar"] = res.summary["features"]["global"]
        print(k, json.dumps(rows[k]), flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 2, 3, 5, 10])
