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

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..runtime.config import require
from ..runtime.errors import RefusalScopeError
from ..runtime.openai_client import ChatClient, MalformedReply, RequestFailed

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
    retries: int = 2
    """Retries of a request that timed out or got a 429/5xx, with exponential backoff."""

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
        require(self.retries >= 0, "explainer.retries must be 0 or more")

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


def _answer_text(content: str) -> str:
    """The first line of the answer, without the ``[EXPLANATION]:`` tag; raises
    ``ValueError`` when it has none."""
    text = content.strip()
    if _TAG in text:
        text = text.rsplit(_TAG, 1)[1]
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    if not line:
        raise ValueError("empty explanation")
    return line


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
    client = ChatClient(
        cfg.base_url,
        cfg.model,
        api_key_env=cfg.api_key_env,
        require_key=False,
        timeout_s=cfg.timeout_s,
        retries=cfg.retries,
        backoff_s=0.5,
        where="explain.explainer",
    )
    url = client.url
    results: dict[str, str | None] = {}
    sent = failed = 0
    for feature, contexts in contexts_by_feature.items():
        results[feature] = None
        if not any(a > 0 for c in contexts for _, a in c):
            log.info("explainer: feature %s has no activating token; not asked", feature)
            continue
        messages = explainer_prompt(contexts, cfg.max_contexts)
        sent += 1
        try:
            answer = client.complete(messages, max_tokens=cfg.max_tokens, temperature=0)
            results[feature] = _answer_text(answer)
        except (RequestFailed, MalformedReply, ValueError) as e:
            failed += 1
            reason = str(e)[:300]
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
