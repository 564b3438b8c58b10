"""Optional one-sentence explanations of features from an OpenAI-compatible chat endpoint.

Off by default (``ExplainerConfig.base_url`` is None). When on, each feature's
top-activating contexts go to ``{base_url}/chat/completions`` (OpenAI, or a local vLLM /
llama.cpp server) and the first line of the answer becomes the card's explanation.

The prompt follows EleutherAI's delphi default explainer (repository EleutherAI/delphi,
``delphi/explainers/default/prompts.py`` and ``prompt_builder.py``): a system message with
the guidelines, then the examples as ``Example i: text`` lines where each run of
consecutive activating tokens sits inside ``<<...>>``, each followed by an
``Activations: ("token", a), ...`` line with activations scaled to 0-10 (as in OpenAI's
neuron explainer). delphi asks for a final ``[EXPLANATION]:`` line; we ask for that line
alone so a small ``max_tokens`` suffices, and accept an answer without the tag too.

The API key is read from the environment variable *named* by ``api_key_env`` at request
time; it is never stored in the config, logged, saved, or put in an exception message.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..runtime.config import require
from ..runtime.errors import RefusalScopeError

log = logging.getLogger(__name__)

Context = Sequence[tuple[str, float]]
"""One context: ``(token_text, activation)`` pairs in order."""

MAX_FIRST_FAILURES = 3
"""Give up when this many first requests all fail (the server or config is wrong)."""

_TAG = "[EXPLANATION]:"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}

SYSTEM_PROMPT = f"""You are a meticulous AI researcher investigating patterns in language.
You will see text examples in which some tokens are marked with delimiters like <<this>>;
a run of consecutive marked tokens is wrapped as one span <<just like this>>. After each
example, the marked tokens are listed with how strongly each one activates the pattern,
on a scale from 0 to 10.
Guidelines:
- Describe, concisely, what the marked tokens and their contexts have in common.
- Summarise the pattern rather than listing example tokens; ignore uninformative examples.
- Do not mention the << >> markers in your explanation.
- Give one explanation, not a list of possibilities.
- Reply with a single line of the form "{_TAG} <one short sentence>" and nothing else."""


@dataclass(frozen=True)
class ExplainerConfig:
    """Where feature explanations come from; off unless ``base_url`` is set."""

    base_url: str | None = None
    """An OpenAI-compatible API root, e.g. ``https://api.openai.com/v1`` or a local vLLM
    server ``http://localhost:8000/v1``; None: no explanations."""
    model: str | None = None
    """The model the server should use (required when ``base_url`` is set)."""
    api_key_env: str = "OPENAI_API_KEY"
    """The NAME of the environment variable holding the API key (never the key itself);
    when it is unset no Authorization header is sent (fine for local servers)."""
    max_contexts: int = 10
    """Top-activating contexts shown per feature at most."""
    timeout_s: float = 60.0
    """Seconds to wait for each request."""
    max_tokens: int = 60
    """Tokens the explanation may take."""

    def __post_init__(self) -> None:
        url = self.base_url
        if url is not None:
            shown = repr(url) if "@" not in url else "a URL with '@'"  # may hold a password
            require(
                url.startswith(("http://", "https://")),
                f"explainer.base_url must start with http:// or https://, got {shown} "
                "(e.g. https://api.openai.com/v1 or http://localhost:8000/v1)",
            )
            parts = urlsplit(url)
            require(
                "@" not in parts.netloc and not parts.query and not parts.fragment,
                "explainer.base_url must not carry credentials, a query or a fragment: put "
                "the key in the environment variable named by explainer.api_key_env",
            )
            require(bool(self.model), "explainer.model is required when base_url is set")
        require(
            _ENV_NAME.fullmatch(self.api_key_env) is not None,
            "explainer.api_key_env must be the NAME of an environment variable holding the "
            "key (e.g. OPENAI_API_KEY), not the key itself",
        )
        require(self.max_contexts > 0, "explainer.max_contexts must be positive")
        require(self.timeout_s > 0, "explainer.timeout_s must be positive")
        require(self.max_tokens > 0, "explainer.max_tokens must be positive")

    @property
    def enabled(self) -> bool:
        """Whether explanations are requested at all."""
        return self.base_url is not None


def check_explainer(cfg: ExplainerConfig) -> None:
    """The checks that can run before any model is loaded: ``cfg`` is an
    ``ExplainerConfig`` (validated on construction) and, when enabled, a warning if the
    key variable is unset (fine for a local server without auth) or if the key would
    travel unencrypted to another machine."""
    if not isinstance(cfg, ExplainerConfig):
        raise RefusalScopeError(f"expected an ExplainerConfig, got {type(cfg).__name__}")
    if not cfg.enabled:
        return
    if not os.environ.get(cfg.api_key_env):
        log.warning(
            "explainer: environment variable %s is unset; requests to %s go without an "
            "API key (fine for a local server without auth)",
            cfg.api_key_env,
            cfg.base_url,
        )
        return
    url = urlsplit(cfg.base_url)
    if url.scheme == "http" and url.hostname not in _LOCAL_HOSTS:
        log.warning("explainer: the API key in %s would be sent unencrypted", cfg.api_key_env)


def explainer_prompt(contexts: Sequence[Context], max_contexts: int = 10) -> list[dict[str, str]]:
    """Chat messages asking for an explanation of the feature active in ``contexts``.

    ``contexts`` come top-first; the first ``max_contexts`` are shown. Tokens with
    activation > 0 are marked ``<<...>>`` (a run of them as one span) and listed with
    their activation scaled to 0-10 by the largest one shown.
    """
    shown = [list(c) for c in contexts[:max_contexts]]
    peak = max((a for c in shown for _, a in c if a > 0), default=1.0)
    lines = []
    for i, context in enumerate(shown, start=1):
        lines.append(f"Example {i}: {_highlight(context)}")
        active = [f'("{_flat(t)}", {max(1, round(10 * a / peak))})' for t, a in context if a > 0]
        if active:
            lines.append(f"Activations: {', '.join(active)}")
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "\n".join(lines)},
    ]


def _flat(token: str) -> str:
    """A token shown on one line (a newline token would split the example)."""
    return token.replace("\r", "\\r").replace("\n", "\\n")


def _highlight(context: Context) -> str:
    """The context's text with each run of activating tokens wrapped in ``<<...>>``."""
    out, inside = [], False
    for token, act in context:
        active = act > 0
        if active != inside:
            out.append("<<" if active else ">>")
            inside = active
        out.append(_flat(token))
    if inside:
        out.append(">>")
    return "".join(out)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would resend the Authorization header to the new host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _post_json(url: str, body: dict[str, Any], key: str | None, timeout: float) -> Any:
    """POST ``body`` as JSON and parse the JSON answer (errors propagate)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    opener = urllib.request.build_opener(_NoRedirect())
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def _answer_text(answer: Any) -> str:
    """The first line of the first choice's content, without the ``[EXPLANATION]:`` tag;
    raises ``ValueError`` when the answer has none."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"unexpected answer shape ({type(e).__name__})") from None
    if not isinstance(content, str):
        raise ValueError("answer has no text content")
    text = content.strip()
    if _TAG in text:
        text = text.rsplit(_TAG, 1)[1]
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    if not line:
        raise ValueError("empty explanation")
    return line


def _describe(error: Exception) -> str:
    """The HTTP status or error class of a failed request, with no headers or body."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"{type(error.reason).__name__}: {error.reason}"
    if isinstance(error, ValueError):  # bad JSON or answer shape; messages hold no secrets
        return f"{type(error).__name__}: {error}"[:200]
    return type(error).__name__


_REQUEST_ERRORS = (OSError, http.client.HTTPException, ValueError)
"""What a failed request raises: URLError/HTTPError/timeouts are OSErrors; bad JSON and
bad answer shapes are ValueErrors."""


def explain_features(
    contexts_by_feature: Mapping[str, Sequence[Context]], cfg: ExplainerConfig
) -> dict[str, str | None]:
    """One explanation per feature (None where the request failed or the feature has no
    activating token), in the order of ``contexts_by_feature``.

    One POST to ``{base_url}/chat/completions`` per feature, at temperature 0. A failed
    request logs a warning naming the feature and the HTTP status or error class; if the
    first ``MAX_FIRST_FAILURES`` requests all fail, raises ``RefusalScopeError`` rather
    than keep calling a server that will not answer.
    """
    require(cfg.enabled, "explain_features needs explainer.base_url set")
    assert cfg.base_url is not None and cfg.model is not None
    url = cfg.base_url.rstrip("/") + "/chat/completions"
    key = os.environ.get(cfg.api_key_env) or None
    results: dict[str, str | None] = {}
    sent = failed = 0
    for feature, contexts in contexts_by_feature.items():
        results[feature] = None
        if not any(a > 0 for c in contexts for _, a in c):
            log.info("explainer: feature %s has no activating token; not asked", feature)
            continue
        body = {
            "model": cfg.model,
            "messages": explainer_prompt(contexts, cfg.max_contexts),
            "max_tokens": cfg.max_tokens,
            "temperature": 0,
        }
        sent += 1
        try:
            results[feature] = _answer_text(_post_json(url, body, key, cfg.timeout_s))
        except _REQUEST_ERRORS as e:
            failed += 1
            reason = _describe(e)
            log.warning("explainer: no explanation for feature %s (%s)", feature, reason)
            if failed == sent == MAX_FIRST_FAILURES:
                raise RefusalScopeError(
                    f"the first {MAX_FIRST_FAILURES} explainer requests to {url} all failed "
                    f"(last: {reason}): check explainer.base_url, that the server serves "
                    f"explainer.model {cfg.model!r}, and that the environment variable "
                    f"{cfg.api_key_env} holds a valid key (or is unset for a server "
                    "without auth)"
                ) from None
            continue
        log.debug("explainer: feature %s: %s", feature, results[feature])
    return results
