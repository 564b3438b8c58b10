"""Open an HTML report in headless Chromium and say whether it works offline.

Chromium is driven over its DevTools protocol on ``--remote-debugging-pipe``: it reads
commands from its descriptor 3 and writes replies and events to its descriptor 4, each a
JSON object ended by a NUL byte, so no websocket package is needed.

A page passes when, once its load event has fired and its scripts have settled, nothing
was logged as an error (``console.error``, an uncaught exception, an error log entry) and
nothing outside the file was requested. Such requests are blocked, so a check never waits
on the network, and are reported as errors.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import math
import os
import select
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refusalscope.runtime.errors import RefusalScopeError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:")
BLOCKED_URLS = ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--remote-debugging-pipe",
    "--no-first-run",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm
    "--hide-scrollbars",  # else a tall page loses 15 px of its width to the scrollbar
]
WINDOW_HEIGHT = 900
SETTLE_IDLE = 0.5  # seconds without events after the load event that count as settled
SETTLE_MAX = 2.0  # ... but never wait longer than this for that
CLOSE_WAIT = 5.0  # seconds Browser.close may take before the process is killed
INSTALL_HINT = "install Chromium (apt-get install chromium) or set $CHROMIUM to its binary"


class BrowserError(RefusalScopeError):
    """Chromium is missing, crashed, or did not load the page in time."""


@dataclass
class BrowserCheck:
    """What headless Chromium saw when it opened one page."""

    errors: list[str]
    """Console errors, uncaught exceptions, error log entries and non-local requests."""
    warnings: list[str]
    """``console.warn`` messages."""
    width: int
    """The viewport width in CSS pixels."""
    height: int
    """The full page height in CSS pixels."""
    screenshot: Path | None = None
    """The full-page PNG, when one was asked for."""
    tiles: list[Path] = field(default_factory=list)
    """The page cut into consecutive PNGs of ``tile_height`` pixels, top first."""
    seconds: float = 0.0
    """Seconds from navigation to the load event."""

    @property
    def ok(self) -> bool:
        """True when the page loaded with no errors."""
        return not self.errors


def find_chromium() -> str | None:
    """The Chromium binary to use: ``$CHROMIUM`` if set, else the first known name on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


class _Pipe:
    """The DevTools protocol over a pair of pipes: commands out, replies and events in.

    ``send`` waits for the reply with its id and keeps every event that arrives meanwhile;
    ``events`` hands the kept events over. Every read has a deadline, so a hung browser
    raises ``BrowserError`` instead of hanging the caller.
    """

    def __init__(self, write_fd: int, read_fd: int, log: Path | None = None):
        self.write_fd, self.read_fd, self.log = write_fd, read_fd, log
        self.next_id, self.buffer = 0, b""
        self.pending: list[dict[str, Any]] = []

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Send one command and return its result; raise ``BrowserError`` if it failed."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline - time.monotonic())
            if reply is None:
                raise BrowserError(f"Chromium did not answer {method} within {timeout:g} s")
            if reply.get("id") != self.next_id:
                self.pending.append(reply)
            elif "error" in reply:
                raise BrowserError(f"Chromium refused {method}: {reply['error'].get('message')}")
            else:
                return reply.get("result", {})

    def wait_event(self, timeout: float) -> dict[str, Any] | None:
        """The next event, or None if none arrives within ``timeout`` seconds."""
        if self.pending:
            return self.pending.pop(0)
        return self._read(timeout)

    def events(self) -> list[dict[str, Any]]:
        """The events kept so far, oldest first, and forgets them."""
        events, self.pending = self.pending, []
        return events

    def _exited(self) -> BrowserError:
        """The error for a browser that went away, with the end of its log."""
        return BrowserError(
            "Chromium exited unexpectedly; run it by hand with --headless to see why"
            + _log_tail(self.log)
        )

    def _write(self, data: bytes) -> None:
        """Write all of ``data``; a browser that has gone away raises ``BrowserError``."""
        try:
            while data:
                data = data[os.write(self.write_fd, data) :]
        except BrokenPipeError as e:
            raise self._exited() from e

    def _read(self, timeout: float) -> dict[str, Any] | None:
        """One message from the browser, or None if none is complete within ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                return None
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise self._exited()
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)


def _log_tail(log: Path | None, lines: int = 5) -> str:
    """The last lines of Chromium's stderr, as a suffix for an error message."""
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()
    tail = [line for line in text if line.strip() and "dbus" not in line][-lines:]  # noise
    return (": " + " | ".join(tail)) if tail else ""


def _high_fd(fd: int) -> int:
    """``fd`` moved to a number above 4, so that mapping pipes onto 3 and 4 cannot clash."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return moved


def _launch(chromium: str, profile: Path, width: int) -> tuple[int, _Pipe]:
    """Start Chromium with its DevTools pipe on descriptors 3 and 4; return (pid, pipe)."""
    cmd_read, cmd_write = (_high_fd(fd) for fd in os.pipe())
    reply_read, reply_write = (_high_fd(fd) for fd in os.pipe())
    log = profile.parent / "chromium.log"
    size = f"--window-size={width},{WINDOW_HEIGHT}"
    args = [chromium, *FLAGS, f"--user-data-dir={profile}", size, "about:blank"]
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600),
        (os.POSIX_SPAWN_DUP2, 1, 2),
        (os.POSIX_SPAWN_DUP2, cmd_read, 3),
        (os.POSIX_SPAWN_DUP2, reply_write, 4),
    ]
    try:
        # its own session, so that the renderers it forks can be killed with it
        pid = os.posix_spawnp(chromium, args, dict(os.environ), file_actions=actions, setsid=True)
    except OSError as e:
        for fd in (cmd_read, cmd_write, reply_read, reply_write):
            os.close(fd)
        raise BrowserError(f"cannot start Chromium at {chromium} ({e}): {INSTALL_HINT}") from e
    os.close(cmd_read)
    os.close(reply_write)
    return pid, _Pipe(cmd_write, reply_read, log)


def _close(pid: int, pipe: _Pipe) -> None:
    """Ask the browser to close; kill its process group if it has not exited within
    ``CLOSE_WAIT`` seconds, and any process of the group left behind."""
    deadline = time.monotonic() + CLOSE_WAIT
    with contextlib.suppress(BrowserError):  # it may exit before it answers
        pipe.send("Browser.close", timeout=CLOSE_WAIT)
    while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):  # when the whole group has exited
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # reaped above
        os.waitpid(pid, 0)
    os.close(pipe.write_fd)
    os.close(pipe.read_fd)


def _open_tab(pipe: _Pipe, width: int) -> str:
    """Create a tab, attach to it and enable the domains the check listens to; its session."""
    target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})
    sid = session["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        pipe.send(f"{domain}.enable", session=sid)
    pipe.send("Network.setBlockedURLs", {"urls": BLOCKED_URLS}, session=sid)
    metrics = {"width": width, "height": WINDOW_HEIGHT, "deviceScaleFactor": 1, "mobile": False}
    pipe.send("Emulation.setDeviceMetricsOverride", metrics, session=sid)
    return sid


def _next_event(pipe: _Pipe, sid: str, timeout: float) -> dict[str, Any] | None:
    """The next event within ``timeout`` seconds, or None; a dialog it opens is dismissed.

    ``alert()`` and ``confirm()`` block the page until answered, so an unanswered one would
    turn into a load timeout instead of the error it is.
    """
    event = pipe.wait_event(timeout)
    if event is not None and event.get("method") == "Page.javascriptDialogOpening":
        pipe.send("Page.handleJavaScriptDialog", {"accept": False}, session=sid)
    return event


def _is_ours(event: dict[str, Any]) -> bool:
    """Whether ``event`` is the main frame leaving ``about:blank``: a load event after it is
    the page's own, not the blank tab's."""
    if event.get("method") != "Page.frameNavigated":
        return False
    frame = event["params"]["frame"]
    return "parentId" not in frame and not frame["url"].startswith("about:")


def _load(pipe: _Pipe, sid: str, html: Path, timeout: float) -> tuple[float, list[dict]]:
    """Navigate to ``html``, wait for its load event and for events to settle.

    Returns the seconds to the load event and every event seen from the navigation on.
    """
    pipe.events()  # the blank tab's
    start = time.monotonic()
    nav = pipe.send("Page.navigate", {"url": html.resolve().as_uri()}, session=sid)
    if nav.get("errorText"):
        raise BrowserError(f"Chromium could not open {html}: {nav['errorText']}")
    seen: list[dict[str, Any]] = []
    navigated = False
    while not (navigated and seen[-1].get("method") == "Page.loadEventFired"):
        event = _next_event(pipe, sid, start + timeout - time.monotonic())
        if event is None:
            raise BrowserError(
                f"{html} did not finish loading within {timeout:g} s; open it in a browser "
                "to see what it waits for, or raise the timeout"
            )
        seen.append(event)
        navigated = navigated or _is_ours(event)
    seconds = time.monotonic() - start
    settle = time.monotonic() + SETTLE_MAX
    while (left := settle - time.monotonic()) > 0:
        event = _next_event(pipe, sid, min(SETTLE_IDLE, left))
        if event is None:
            break
        seen.append(event)
    return seconds, seen


def _text(args: list[dict[str, Any]]) -> str:
    """The console arguments as the console would print them, space-separated."""
    parts = []
    for arg in args:
        value = arg.get("value", arg.get("description", arg.get("unserializableValue", "")))
        parts.append(value if isinstance(value, str) else json.dumps(value))
    return " ".join(parts)


def _where(details: dict[str, Any]) -> str:
    """`` (url:line)`` for an event that says where it happened, else an empty string."""
    url = details.get("url")
    if not url:
        return ""
    return f" ({url}:{details['lineNumber'] + 1})" if "lineNumber" in details else f" ({url})"


def _exception(details: dict[str, Any]) -> str:
    """An uncaught exception as one line: its message and where it was thrown."""
    exception = details.get("exception") or {}
    message = exception.get("description") or details.get("text", "exception")
    return f"uncaught {message.splitlines()[0]}{_where(details)}"


def _classify(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Errors and warnings among the page's events, each once, in the order seen."""
    errors: list[str] = []
    warnings: list[str] = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = f"console.{params['type']}: {_text(params.get('args', []))}"
            if params["type"] in ("error", "assert"):
                errors.append(text)
            elif params["type"] == "warning":
                warnings.append(text.replace("console.warning", "console.warn", 1))
        elif method == "Runtime.exceptionThrown":
            errors.append(_exception(params["exceptionDetails"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            errors.append(f"{entry['source']} error: {entry['text']}{_where(entry)}")
        elif method == "Page.javascriptDialogOpening":
            errors.append(f"{params['type']}() dialog: {params['message']}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(LOCAL_SCHEMES):
                errors.append(f"network request to {url} (the report must open offline)")
    return list(dict.fromkeys(errors)), list(dict.fromkeys(warnings))


def _capture(pipe: _Pipe, sid: str, out: Path, width: int, y: int, height: int) -> Path:
    """Save the page region ``[y, y + height)`` at scale 1 as a PNG at ``out``."""
    clip = {"x": 0, "y": y, "width": width, "height": height, "scale": 1}
    params = {"format": "png", "captureBeyondViewport": True, "clip": clip}
    data = pipe.send("Page.captureScreenshot", params, session=sid, timeout=60)["data"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(data))
    return out


def _tiles(pipe: _Pipe, sid: str, base: Path, width: int, height: int, tile: int) -> list[Path]:
    """The page as ``<stem>-01.png``, … beside ``base``, ``tile`` pixels tall (the last less)."""
    paths = []
    for i, y in enumerate(range(0, height, tile), start=1):
        out = base.with_name(f"{base.stem}-{i:02d}.png")
        paths.append(_capture(pipe, sid, out, width, y, min(tile, height - y)))
    return paths


def check_page(
    html: Path,
    screenshot: Path | None = None,
    width: int = 1280,
    tile_height: int | None = None,
    timeout: float = 120,
    chromium: str | None = None,
) -> BrowserCheck:
    """Open ``html`` in headless Chromium ``width`` pixels wide and report what went wrong.

    With ``screenshot``, the whole page is saved there as one PNG at scale 1; with
    ``tile_height``, it is also saved as consecutive tiles ``<stem>-01.png``, … named after
    ``screenshot`` (or after ``html`` when there is no screenshot). Raises ``BrowserError``
    when Chromium is missing or the page does not load within ``timeout`` seconds.
    """
    html = Path(html)
    if not html.is_file():
        raise BrowserError(f"no page at {html}: pass the path of a rendered HTML report")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise BrowserError(f"no Chromium found on PATH: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="refusalscope-chromium-") as tmp:
        pid, pipe = _launch(chromium, Path(tmp) / "profile", width)
        try:
            sid = _open_tab(pipe, width)
            seconds, events = _load(pipe, sid, html, timeout)
            size = pipe.send("Page.getLayoutMetrics", session=sid)["cssContentSize"]
            height = math.ceil(size["height"])
            shot = None
            if screenshot is not None:
                shot = _capture(pipe, sid, Path(screenshot), width, 0, height)
            base = Path(screenshot) if screenshot else html.with_suffix(".png")
            tiles = _tiles(pipe, sid, base, width, height, tile_height) if tile_height else []
            errors, warnings = _classify(events + pipe.events())
        finally:
            _close(pid, pipe)
    return BrowserCheck(errors, warnings, width, height, shot, tiles, seconds)
