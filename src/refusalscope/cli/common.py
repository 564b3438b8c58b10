"""What every command shares: the Typer app, logging, ``--set`` and the error exit."""

from __future__ import annotations

import logging
from typing import Any

import typer

from ..runtime.errors import RefusalScopeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
organism_app = typer.Typer(no_args_is_help=True, help="The embedded model organism.")
app.add_typer(organism_app, name="organism")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def _set_option(example: str) -> Any:
    """The repeatable ``--set KEY=VALUE`` option of a command whose config it overrides."""
    return typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help=f"Override one config field, e.g. --set {example} (repeatable; values are JSON, "
        "else text).",
    )


def _fail(e: RefusalScopeError) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(2)
