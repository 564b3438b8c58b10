"""Commands for real models: named datasets, presets, and the abliterated-checkpoint export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..runtime.errors import RefusalScopeError
from .common import _fail, _setup_logging, app

export_app = typer.Typer(no_args_is_help=True, help="Export edited checkpoints from a run.")
app.add_typer(export_app, name="export")


@app.command("datasets")
def datasets(
    name: Annotated[str | None, typer.Argument(help="A dataset to load and count.")] = None,
    dir: Annotated[
        Path | None,
        typer.Option("--dir", help="Folder with the dataset in its published layout (DIR/NAME/…)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """List the named datasets, or load one and print its counts per split and category."""
    _setup_logging(verbose)
    from ..data.registry import DATASETS, describe

    if name is None:
        for spec in DATASETS.values():
            typer.echo(f"{spec.name:18} {spec.kind:8} {', '.join(spec.splits)}")
            typer.echo(f"{'':18} {spec.what} ({spec.licence})")
        return
    try:
        info = describe(name, dir)
    except RefusalScopeError as e:
        _fail(e)
    if as_json:
        json.dump(info, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return
    typer.echo(f"{info['name']}: {info['what']}\nsource {info['source']} · {info['licence']}")
    typer.echo(f"content warning: {info['content_warning']}")
    for split, s in info["splits"].items():
        if "error" in s:
            typer.echo(f"  {split}: not available ({s['error']})")
            continue
        typer.echo(f"  {split}: {s['n']} from {s['file']}")
        for category, n in (s.get("categories") or {}).items():
            typer.echo(f"      {n:6}  {category}")


def run_config_dict(preset: str | None, config: Path | None, overrides: list[str]) -> dict:
    """The run config as a dict: the preset's, then the config file's fields over it,
    then each ``--set``."""
    from ..runtime.config import apply_overrides, read_config_file

    raw: dict[str, Any] = {}
    if preset is not None:
        from ..pipeline.dry_run import preset_config

        raw = preset_config(preset)
    if config is not None:
        raw = _merged(raw, read_config_file(config))
    return apply_overrides(raw, overrides)


def _merged(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dry_run_report(cfg: Any, preset: str | None) -> int:
    """Print what the run would load (``--dry-run``), then whether the checks that run
    before loading pass; the exit code (0: ready, 2: not)."""
    from ..pipeline.config import check_run_config
    from ..pipeline.dry_run import describe_run

    typer.echo(describe_run(cfg, preset))
    try:
        check_run_config(cfg)
    except RefusalScopeError as e:
        typer.echo(f"\nnot ready: {e}", err=True)
        return 2
    typer.echo("\nready: every check that runs before loading passed")
    return 0


@app.command("presets")
def presets(
    name: Annotated[str | None, typer.Argument(help="A preset to describe.")] = None,
) -> None:
    """List the model presets (model, SAE release, width, layers), or describe one."""
    from ..pipeline.presets import describe_preset, get_preset, preset_names, resolve_preset

    try:
        if name is not None:
            typer.echo(describe_preset(resolve_preset(name)))
            return
        for n in preset_names():
            p = get_preset(n)
            typer.echo(f"{n:24} {p.model:34} {p.release} ({p.width}, layers {p.layers})")
    except RefusalScopeError as e:
        _fail(e)


@export_app.command("abliterated")
def export_abliterated_cmd(
    run: Annotated[Path, typer.Option("--run", help="Output folder of `refusalscope run`.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the checkpoint.")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Save the run's model with its refusal direction projected out of every matrix that
    writes to the residual stream, as an ordinary Hugging Face checkpoint with a model card."""
    _setup_logging(verbose)
    from ..export.abliterate import export_abliterated

    try:
        path = export_abliterated(run, out)
    except RefusalScopeError as e:
        _fail(e)
    typer.echo(f"wrote {path}")
