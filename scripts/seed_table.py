"""Jailbreak rates of several `refusalscope run` outputs (e.g. one per organism seed).

    python scripts/seed_table.py runs/organism runs/seed1 runs/seed2

Prints, per method, each run's complied rate with its 95 % Wilson interval, and the mean over
runs with a t-interval over runs (the spread between organisms, not within one test set).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

# two-sided 95 % Student t quantiles by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def main(folders: list[str]) -> None:
    runs = [json.loads((Path(f) / "results.json").read_text()) for f in folders]
    names = " | ".join(Path(f).name for f in folders)
    print(f"| method | {names} | mean (95 % t over runs) |")
    print("|---" * (len(folders) + 2) + "|")
    for method in runs[0]["jailbreak"]:
        cells, rates = [], []
        for r in runs:
            v = r["jailbreak"][method]
            low, high = v["complied_ci95"]
            cells.append(f"{v['complied']:.2f} ({low:.2f}–{high:.2f})")
            rates.append(v["complied"])
        mean = statistics.fmean(rates)
        if len(rates) > 1:
            half = T95.get(len(rates) - 1, 1.96) * statistics.stdev(rates) / len(rates) ** 0.5
            summary = f"{mean:.2f} ± {half:.2f}"
        else:
            summary = f"{mean:.2f}"
        print(f"| {method} | " + " | ".join(cells) + f" | {summary} |")
    for f, r in zip(folders, runs, strict=True):
        st, d = r["steering"], r["direction"]
        print(f"{Path(f).name}: l* = {d['layer']}, c = {st['c']}, K* = {st['k_star']}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
