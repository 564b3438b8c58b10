"""A small client for OpenAI-compatible chat-completions endpoints (stdlib only).

One POST to ``{base_url}/chat/completions`` per call (OpenAI, or a local vLLM /
llama.cpp / Ollama server). What it guarantees, because judges and explainers send
thousands of paid requests unattended:

* The API key is read from the environment variable *named* by the caller at request
  time (so a rotated key is picked up); it is never stored, logged, saved or put in an
  exception message, and server error texts are shown with it blanked out.
* Redirects are not followed: urllib would resend the Authorization header to the new
  host. ``http://`` is accepted only for loopback hosts, so the key never crosses a
  network unencrypted.
* HTTP 429, 5xx, timeouts and dropped connections are retried with exponential backoff
  (``backoff_s * 2**attempt``, at most ``MAX_BACKOFF_S``), or after the server's
  ``Retry-After`` when it sends one. Other 4xx answers fail at once: retrying a bad key
  or an unknown model only spends money.
* Every request sent, retries included, is taken from a ``RequestBudget``; once it is
  spent, ``BudgetExhausted`` stops the run rather than let a loop bill without bound.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

from .errors import RefusalScopeError

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
"""Longest wait between two attempts when the server sends no ``Retry-After``."""
MAX_RETRY_AFTER_S = 300.0
"""A ``Retry-After`` longer than this is a spent quota, not a blip: fail instead of hang."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REDIRECTS = {301, 302, 303, 307, 308}
_SHOWN_BODY = {400, 404, 409, 413, 422}  # their error texts say which field or model is wrong


class RequestFailed(RefusalScopeError):
    """The endpoint could not be reached or answered with an error, after any retries."""


class MalformedReply(RefusalScopeError):
    """The endpoint answered 200 but not with a chat completion holding text."""


class BudgetExhausted(RefusalScopeError):
    """The run has sent as many requests as its budget allows."""


class RequestBudget:
    """How many requests a run may still send; ``spend()`` before each one.

    ``setting`` names the config field that sets the limit, for the error message.
    """

    def __init__(self, max_requests: int, setting: str = "max_requests") -> None:
        if max_requests <= 0:
            raise RefusalScopeError(f"{setting} must be positive, got {max_requests}")
        self.max_requests = max_requests
        self.setting = setting
        self.used = 0

    @property
    def remaining(self) -> int:
        return self.max_requests - self.used

    def spend(self) -> None:
        """Count one request; raise ``BudgetExhausted`` if none is left."""
        if self.used >= self.max_requests:
            raise BudgetExhausted(
                f"the request budget of {self.max_requests} is spent ({self.setting}); "
                f"raise {self.setting} or send fewer items"
            )
        self.used += 1


def is_local_host(host: str | None) -> bool:
    """Whether ``host`` is this machine (``localhost`` or a loopback address)."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, where: str) -> None:
    """Raise ``RefusalScopeError`` unless ``url`` is an https:// API root, or http:// on
    this machine, with no credentials, query or fragment. ``where`` names the field."""
    shown = repr(url) if "@" not in url else "a URL with '@'"  # may hold a password
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RefusalScopeError(
            f"{where} must be an http(s) URL such as https://api.openai.com/v1 or "
            f"http://localhost:8000/v1, got {shown}"
        )
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise RefusalScopeError(
            f"{where} must not carry credentials, a query or a fragment: put the key in "
            "the environment variable named by api_key_env"
        )
    if parts.scheme == "http" and not is_local_host(parts.hostname):
        raise RefusalScopeError(
            f"{where} uses http:// for the non-local host {parts.hostname!r}, which would "
            "send the API key unencrypted; use https:// (http:// is accepted only for "
            "localhost / 127.0.0.1 / ::1)"
        )


def check_env_name(name: str, where: str) -> None:
    """Raise unless ``name`` looks like an environment variable's name (not a key)."""
    if _ENV_NAME.fullmatch(name) is None:
        raise RefusalScopeError(
            f"{where} must be the NAME of an environment variable holding the key "
            "(e.g. OPENAI_API_KEY), not the key itself"
        )


def read_api_key(env: str, *, required: bool, where: str) -> str | None:
    """The key in environment variable ``env``; when unset, None or (``required``) an
    error naming the variable and ``where`` (the field that names it)."""
    key = os.environ.get(env) or None
    if key is None and required:
        raise RefusalScopeError(
            f"environment variable {env} (named by {where}) is unset or empty; export the "
            "API key there (for a local server without auth any value works, e.g. EMPTY)"
        )
    return key


def message_content(answer: Any) -> str:
    """The text of the first choice of a chat-completions answer; ``MalformedReply``
    when there is none."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise MalformedReply(f"the answer is not a chat completion ({type(e).__name__})") from None
    if not isinstance(content, str):
        raise MalformedReply("the answer's message has no text content")
    return content


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would resend the Authorization header to the new host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class ChatClient:
    """POSTs chat requests to one OpenAI-compatible endpoint, with retries and a budget.

    ``where`` prefixes the config fields named in error messages (e.g. ``"judge"`` gives
    ``judge.base_url``). ``sleep`` is injectable so tests need not wait.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        require_key: bool = True,
        timeout_s: float = 60.0,
        retries: int = 5,
        backoff_s: float = 1.0,
        budget: RequestBudget | None = None,
        where: str = "endpoint",
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        check_base_url(base_url, f"{where}.base_url")
        check_env_name(api_key_env, f"{where}.api_key_env")
        if timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise RefusalScopeError(
                f"{where}: timeout_s must be positive and retries, backoff_s non-negative"
            )
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.require_key = require_key
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.budget = budget
        self.where = where
        self._sleep = sleep
        self._opener = urllib.request.build_opener(_NoRedirect())

    def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
    ) -> str:
        """The text of the endpoint's answer to ``messages`` (one request, plus retries)."""
        body = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        return message_content(self.post(body))

    def post(self, body: Mapping[str, Any]) -> Any:
        """POST ``body`` as JSON and return the parsed JSON answer, retrying transient
        failures; ``RequestFailed``, ``MalformedReply`` or ``BudgetExhausted`` otherwise."""
        key = read_api_key(
            self.api_key_env, required=self.require_key, where=f"{self.where}.api_key_env"
        )
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.retries + 1):
            if self.budget is not None:
                self.budget.spend()
            try:
                return self._post_once(data, key)
            except urllib.error.HTTPError as e:
                with e:  # closes the error's socket
                    reason, wait = self._http_failure(e, key)
            except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
                reason, wait = _transient(e, self.timeout_s), None
            except urllib.error.URLError as e:
                if not isinstance(e.reason, TimeoutError):
                    raise RequestFailed(
                        f"cannot reach {self.url} ({_reason(e.reason)}): check "
                        f"{self.where}.base_url and that the server is running"
                    ) from None
                reason, wait = _transient(e.reason, self.timeout_s), None
            if attempt == self.retries:
                raise RequestFailed(
                    f"{self.url} failed {attempt + 1} time(s) in a row (last: {reason}); "
                    f"the server is overloaded or down: try later or raise {self.where}.retries"
                )
            if wait is None:
                wait = min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)
            log.warning(
                "%s: %s; retry %d/%d in %.1f s", self.url, reason, attempt + 1, self.retries, wait
            )
            self._sleep(wait)
        raise AssertionError("unreachable")

    def _post_once(self, data: bytes, key: str | None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        with self._opener.open(request, timeout=self.timeout_s) as response:
            raw = response.read()
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MalformedReply(f"{self.url} answered with something other than JSON") from None

    def _http_failure(self, e: urllib.error.HTTPError, key: str | None) -> tuple[str, float | None]:
        """``(reason, wait)`` for a retryable HTTP error (wait None: use the backoff);
        raises ``RequestFailed`` for the others."""
        status = f"HTTP {e.code} {e.reason}"
        if e.code == 429 or e.code >= 500:
            wait = _retry_after(e.headers)
            if wait is not None and wait > MAX_RETRY_AFTER_S:
                raise RequestFailed(
                    f"{self.url} answered {status} and asks to wait {wait:.0f} s: its rate "
                    "limit or quota is spent; try again later"
                )
            return status, wait
        if e.code in _REDIRECTS:
            raise RequestFailed(
                f"{self.url} answered {status}, a redirect; redirects are not followed "
                f"because they would resend the API key: set {self.where}.base_url to the "
                "address it redirects to"
            )
        if e.code in (401, 403):
            hint = f"check that environment variable {self.api_key_env} holds a valid key"
        else:
            hint = f"check {self.where}.base_url and {self.where}.model ({self.model!r})"
        detail = _error_text(e, key) if e.code in _SHOWN_BODY else ""
        raise RequestFailed(f"{self.url} answered {status}{detail}: {hint}")


def _transient(error: BaseException, timeout_s: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    return f"connection lost ({type(error).__name__})"


def _reason(reason: Any) -> str:
    return (
        f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    )


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _error_text(e: urllib.error.HTTPError, key: str | None) -> str:
    """`` (server says: ...)`` from an OpenAI-style error body, with the key blanked."""
    try:
        answer = json.loads(e.read(4096).decode("utf-8"))
        text = answer["error"]["message"] if isinstance(answer["error"], dict) else answer["error"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    text = " ".join(str(text).split())
    if key:
        text = text.replace(key, "***")
    return f" (server says: {text[:200]})" if text else ""
