"""The headless-Chromium check of a page: errors, warnings, offline loading, screenshots.

Each browser test opens one tiny page in one browser (about a second) and is skipped where
no Chromium is installed; the protocol reader is tested on plain pipes.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from refusalscope.report.browser import BrowserError, _Pipe, check_page, find_chromium

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed")

TALL = '<div style="height: 3000px; background: linear-gradient(red, blue)">tall</div>'


def page(tmp_path: Path, body: str) -> Path:
    """A minimal HTML page with ``body``, written to ``tmp_path``."""
    html = tmp_path / "page.html"
    html.write_text(f'<!doctype html><html><body style="margin: 0">{body}</body></html>')
    return html


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, read from its IHDR chunk."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@needs_chromium
def test_clean_tall_page_passes_with_full_page_screenshot_and_tiles(tmp_path):
    shot = tmp_path / "shots" / "page.png"
    check = check_page(page(tmp_path, TALL), screenshot=shot, width=800, tile_height=1000)
    assert check.ok and check.errors == [] and check.warnings == []
    assert (check.width, check.height) == (800, 3000)
    assert check.screenshot == shot and png_size(shot) == (800, 3000)
    names = [p.name for p in check.tiles]
    assert names == ["page-01.png", "page-02.png", "page-03.png"]
    assert all(png_size(p) == (800, 1000) for p in check.tiles)
    assert 0 < check.seconds < 30


@needs_chromium
def test_console_error_fails_with_its_message(tmp_path):
    check = check_page(page(tmp_path, '<script>console.error("chart data missing", 3)</script>'))
    assert not check.ok
    assert check.errors == ["console.error: chart data missing 3"]


@needs_chromium
def test_uncaught_exception_fails(tmp_path):
    body = '<script>function draw() { throw new TypeError("no canvas"); } draw();</script>'
    check = check_page(page(tmp_path, body))
    assert not check.ok and len(check.errors) == 1
    assert "TypeError: no canvas" in check.errors[0] and "page.html" in check.errors[0]


@needs_chromium
def test_request_outside_the_file_fails(tmp_path):
    check = check_page(page(tmp_path, '<script src="https://cdn.example.com/x.js"></script>'))
    assert not check.ok
    assert any("network request to https://cdn.example.com/x.js" in e for e in check.errors)


@needs_chromium
def test_console_warn_is_a_warning_not_an_error(tmp_path):
    check = check_page(page(tmp_path, '<script>console.warn("slow render")</script>'))
    assert check.ok and check.errors == []
    assert check.warnings == ["console.warn: slow render"]
    assert check.screenshot is None and check.tiles == []


@needs_chromium
def test_page_that_never_loads_raises_after_the_timeout(tmp_path):
    with pytest.raises(BrowserError, match="did not finish loading within 1 s"):
        check_page(page(tmp_path, "<script>while (true) {}</script>"), timeout=1)


def test_pipe_keeps_events_that_arrive_before_the_reply_and_times_out_on_silence():
    to_browser, from_browser = os.pipe(), os.pipe()
    pipe = _Pipe(to_browser[1], from_browser[0])
    messages = [
        {"method": "Page.loadEventFired", "params": {}},
        {"id": 7, "result": {"stale": True}},
        {"id": 1, "result": {"targetId": "T"}},
        {"method": "Log.entryAdded", "params": {}},
    ]
    os.write(from_browser[1], b"".join(json.dumps(m).encode() + b"\0" for m in messages))
    assert pipe.send("Target.createTarget", {"url": "about:blank"}) == {"targetId": "T"}
    sent = os.read(to_browser[0], 1000)
    assert sent.endswith(b"\0") and json.loads(sent[:-1])["method"] == "Target.createTarget"
    assert [m.get("method", m.get("id")) for m in pipe.events()] == ["Page.loadEventFired", 7]
    assert pipe.wait_event(0.1) == {"method": "Log.entryAdded", "params": {}}
    assert pipe.wait_event(0.1) is None
    with pytest.raises(BrowserError, match="did not answer Page.enable within 0.1 s"):
        pipe.send("Page.enable", timeout=0.1)
    os.close(from_browser[1])
    with pytest.raises(BrowserError, match="exited unexpectedly"):
        pipe.wait_event(1)
    for fd in (*to_browser, from_browser[0]):
        os.close(fd)
