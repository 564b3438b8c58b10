"""The method's commands: build the organism, run, re-render a report, replicate, bench."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..runtime.errors import RefusalScopeError
from .common import _fail, _set_option, _setup_logging, app, organism_app


@organism_app.command("build")
def organism_build(
    out: Annotated[Path | None, typer.Option(help="Copy the organism here.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for data, model and SAEs.")] = 0,
    config: Annotated[
        Path | None, typer.Option(help="JSON/TOML file with OrganismConfig fields.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if cached.")] = False,
    overrides: Annotated[list[str] | None, _set_option("sae.expansion=4")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Build the organism (or reuse the cached build) and print its organism.json summary."""
    _setup_logging(verbose)
    from ..pipeline.organism import OrganismConfig, build_organism
    from ..runtime.config import apply_overrides, from_dict, read_config_file

    try:
        raw = apply_overrides(read_config_file(config) if config else {}, overrides or [])
        raw["seed"] = seed if "seed" not in raw or seed != 0 else raw["seed"]
        cfg = from_dict(OrganismConfig, raw, "organism config")
        organism = build_organism(cfg, out=out, force=force)
    except RefusalScopeError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.echo("interrupted: the build was not kept; rerun to start it again", err=True)
        raise typer.Exit(130) from None
    m = organism.manifest
    summary = {
        "folder": str(organism.folder),
        "build_seconds": m["build_seconds"],
        "build_split": m["build_split"],
        "n_params": m["n_params"],
        "behavior": m["behavior"],
        "saes": m["saes"],
        "direction_sweep": m["direction_sweep"],
        "versions": m.get("versions"),
        "weights_sha256": m.get("weights_sha256"),
    }
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")


_PRESET = typer.Option(
    help="Start from a preset (`refusalscope presets`); --config and --set override it."
)
_DRY_RUN = typer.Option("--dry-run", help="Print what would be loaded, with sizes; load nothing.")


@app.command("run")
def run(
    config: Annotated[
        Path | None, typer.Option(help="JSON/TOML file with RunConfig fields.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("refusalscope-out"),
    force: Annotated[
        str | None, typer.Option(help="Recompute this stage and all later ones.")
    ] = None,
    overrides: Annotated[list[str] | None, _set_option("evaluation.k_star=20")] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Start from a preset (`refusalscope presets`); --config and --set "
            "override its fields."
        ),  # fmt: skip
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print what would be loaded, with sizes; load nothing."),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the whole method (organism by default) and write results, report and artifacts."""
    _setup_logging(verbose)
    from ..pipeline.config import RunConfig
    from ..pipeline.outputs import check_out, write_outputs
    from ..pipeline.run import run as run_all
    from ..runtime.config import from_dict
    from .models import dry_run_report, run_config_dict

    done: list[str] = []
    try:
        raw = run_config_dict(preset, config, overrides or [])
        cfg = from_dict(RunConfig, raw, "run config")
        if dry_run:
            raise typer.Exit(dry_run_report(cfg, preset))
        check_out(out)
        res = run_all(cfg, force=force, on_stage=lambda stage, _: done.append(stage))
        write_outputs(res, out)
    except RefusalScopeError as e:
        _fail(e)
    except KeyboardInterrupt:
        finished = ", ".join(done) if done else "none"
        typer.echo(
            f"interrupted. Stages finished and cached: {finished}. Nothing was written to "
            f"{out}. Rerun the same command to resume from there.",
            err=True,
        )
        raise typer.Exit(130) from None
    _print_headline(res.summary, out)


def _print_headline(r: dict[str, Any], out: Path) -> None:
    """What a run prints: where its outputs are and its headline numbers."""
    judges = (r.get("judges") or {}).get("agreement") or {}
    summary = {
        "out": str(out),
        "direction_layer": r["direction"]["layer"],
        "steering": r["steering"],
        "jailbreak_complied": {m: v["complied"] for m, v in r["jailbreak"].items()},
        "analyses": _analyses_headline(r),
        "feature_cards": (r.get("explain") or {}).get("n_cards"),
        **({"judge_agreement_kappa": {k: v["kappa"] for k, v in judges.items()}} if judges else {}),
        "report": str(out / "report.html"),
        "stages_seconds": {k: v["seconds"] for k, v in r["stages"].items()},
    }
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")


@app.command("report")
def report(
    run_dir: Annotated[Path, typer.Argument(help="Output folder of `refusalscope run`.")],
    out: Annotated[
        Path | None, typer.Option(help="HTML file to write (default: RUN_DIR/report.html).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Re-render the HTML report from a run's output folder, without recomputing."""
    _setup_logging(verbose)
    import time

    from ..pipeline.outputs import write_report

    start = time.perf_counter()
    try:
        path = write_report(run_dir, out)
    except RefusalScopeError as e:
        _fail(e)
    size = path.stat().st_size / 2**20
    typer.echo(f"wrote {path} ({size:.1f} MiB) in {time.perf_counter() - start:.1f} s")


def _analyses_headline(r: dict[str, Any]) -> dict[str, Any]:
    """One line per analysis for the terminal (the full tables are in results.json)."""
    out: dict[str, Any] = {}
    names = ("categories", "jailbreak_analysis", "probes", "faithfulness", "circuit")
    c, j, p, f, u = (r.get(k) or {} for k in names)
    if "checks" in c:
        out["categories_transfer_diagonal_vs_off"] = c["checks"]["transfer_diagonal"]
    if "groups" in j:
        out["jailbreak_drop_harm_refusal"] = {
            g: [v["harm_drop"], v["refusal_drop"]]
            for g, v in j["groups"].items()
            if g in ("successful", "failed")
        }
    if p.get("ood"):
        out["probes_ood_accuracy"] = {k: v["accuracy"] for k, v in p["ood"].items()}
    if "spearman" in f:
        pool = f["spearman_pool"].items()
        out["faithfulness_spearman_with_exact_on_pool"] = {m: v["mean"] for m, v in pool}
        out["prefilter_recall"] = f["prefilter_recall"]["mean"]
    if "edges" in u:
        out["circuit_relative_drop_edge_spearman"] = [u["relative_drop"], u["edge_spearman"]]
    skipped = {
        k: v["skipped"] for k, v in zip(names, (c, j, p, f, u), strict=True) if "skipped" in v
    }
    return out | ({"skipped": skipped} if skipped else {})


@app.command("replicate")
def replicate(
    seeds: Annotated[
        int, typer.Option(help="Organisms to build and study: seeds 0 .. N-1.", min=2)
    ] = 5,
    config: Annotated[
        Path | None, typer.Option(help="JSON/TOML file with RunConfig fields.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("refusalscope-replicate"),
    overrides: Annotated[list[str] | None, _set_option("organism.model.steps=800")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the method and its analyses on organisms of N seeds; print the table over seeds
    (mean, 95 % interval, paired F* − baseline) and write it with every run's outputs."""
    _setup_logging(verbose)
    from ..pipeline.config import RunConfig, check_run_config
    from ..pipeline.replicate import MARKDOWN
    from ..pipeline.replicate import replicate as replicate_all
    from ..runtime.config import apply_overrides, from_dict, read_config_file

    try:
        raw = apply_overrides(read_config_file(config) if config else {}, overrides or [])
        cfg = from_dict(RunConfig, raw, "run config")
        check_run_config(cfg)
        replicate_all(
            cfg,
            list(range(seeds)),
            out,
            on_seed=lambda s, _: typer.echo(f"seed {s}: done", err=True),
        )
    except RefusalScopeError as e:
        _fail(e)
    except KeyboardInterrupt:
        typer.echo(
            f"interrupted: nothing was written to {out}; finished stages are cached, so "
            "rerunning the same command resumes",
            err=True,
        )
        raise typer.Exit(130) from None
    typer.echo((out / MARKDOWN).read_text())


@app.command("bench")
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Fewer prompts and repeats.")] = False,
    out: Annotated[Path, typer.Option(help="Write the JSON here too.")] = Path("bench.json"),
    only: Annotated[
        list[str] | None,
        typer.Option(help="laig, clamp_generate, faithfulness and/or run (repeatable)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Benchmark the fast paths against their references; print JSON and write it to a file."""
    _setup_logging(verbose)
    from ..bench import run_benchmarks, write_results

    try:
        results = run_benchmarks(quick, only)
    except RefusalScopeError as e:
        _fail(e)
    write_results(results, out)
    json.dump(results, sys.stdout, indent=2)
    sys.stdout.write("\n")
