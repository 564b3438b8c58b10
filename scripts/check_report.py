#!/usr/bin/env python3
"""Open an HTML report in headless Chromium and fail if it logs errors or fetches anything.

    python scripts/check_report.py runs/x/report.html --screenshot report.png --tiles 1200

Prints one line per error and warning, then a summary line. Exit status: 0 when the page
loaded cleanly, 1 when it logged errors, requested a non-local URL or did not load, 2 when
Chromium is missing ($CHROMIUM names one explicitly) or the report does not exist.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from refusalscope.report.browser import BrowserCheck, BrowserError, check_page, find_chromium


def shown(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it, else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def summary(check: BrowserCheck) -> str:
    """One line: verdict, page size, load time, and the images written."""
    verdict = "ok" if check.ok else f"FAILED ({len(check.errors)} errors)"
    line = f"{verdict}: {check.width}×{check.height} px, loaded in {check.seconds:.2f} s"
    if check.screenshot is not None:
        line += f", screenshot: {shown(check.screenshot)}"
    if check.tiles:
        line += f", {len(check.tiles)} tiles: {shown(check.tiles[0])} … {shown(check.tiles[-1])}"
    return line


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="the HTML report to open")
    parser.add_argument("--screenshot", type=Path, help="save the whole page as this PNG")
    parser.add_argument(
        "--tiles",
        type=int,
        metavar="N_PIXELS",
        help="also save the page as PNGs N_PIXELS tall, <stem>-01.png, …, named after "
        "--screenshot or else after the report",
    )
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS px")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for load")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run the check and return the exit status."""
    args = parse(argv)
    if find_chromium() is None:
        print("error: no Chromium found: install chromium or set $CHROMIUM", file=sys.stderr)
        return 2
    if not args.report.is_file():
        print(f"error: no report at {args.report}", file=sys.stderr)
        return 2
    try:
        check = check_page(args.report, args.screenshot, args.width, args.tiles, args.timeout)
    except BrowserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for error in check.errors:
        print(f"error: {error}")
    for warning in check.warnings:
        print(f"warning: {warning}")
    print(summary(check))
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
