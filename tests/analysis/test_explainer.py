"""The feature explainer against a local OpenAI-style server (no network, no key)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from refusalscope.analysis.explainer import (
    ExplainerConfig,
    check_explainer,
    explain_features,
    explainer_prompt,
)
from refusalscope.runtime.errors import RefusalScopeError

SECRET = "sk-test-0123456789abcdefSECRET"
KEY_ENV = "REFUSALSCOPE_TEST_EXPLAINER_KEY"
LOGGER = "refusalscope.analysis.explainer"

BOMB = [("How", 0.0), (" to", 0.0), (" build", 4.0), (" a", 0.0), (" bomb", 8.0), ("?", 0.0)]
SORRY = [("I", 0.0), (" can", 0.0), ("'t", 4.0), (" help", 3.0), (".", 0.0)]

Reply = Callable[[str, dict], tuple[int, bytes]]
"""(path, JSON body) -> (status, response body)."""


def ok(content: str = "[EXPLANATION]: Requests for weapons.\nsecond line") -> Reply:
    answer = {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    return lambda path, body: (200, json.dumps(answer).encode())


def fail_if(word: str, then: Reply) -> Reply:
    """500 when ``word`` is in the prompt, else ``then``."""

    def reply(path: str, body: dict) -> tuple[int, bytes]:
        if word in body["messages"][-1]["content"]:
            return 500, b'{"error": {"message": "boom"}}'
        return then(path, body)

    return reply


class Server:
    """A ThreadingHTTPServer on a free port that records requests and answers ``reply``."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.reply: Reply = ok()
        self.delay_s = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                server.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                time.sleep(server.delay_s)
                status, payload = server.reply(self.path, body)
                self.send_response(status)
                if status in (301, 302, 303):
                    self.send_header("Location", "/elsewhere/chat/completions")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def config(self, **kw: object) -> ExplainerConfig:
        return ExplainerConfig(
            **{
                "base_url": self.base_url,
                "model": "tiny-explainer",
                "api_key_env": KEY_ENV,
                "retries": 0,  # one request per feature, as the counts below expect
                **kw,
            }
        )


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)  # localhost must not go through a proxy
    monkeypatch.delenv(KEY_ENV, raising=False)
    s = Server()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def test_request_goes_to_chat_completions_with_marked_tokens(server: Server) -> None:
    out = explain_features({"f12": [BOMB, SORRY]}, server.config())
    assert out == {"f12": "Requests for weapons."}
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    body = req["body"]
    assert body["model"] == "tiny-explainer"
    assert body["max_tokens"] == 60 and body["temperature"] == 0
    user = body["messages"][-1]["content"]
    assert body["messages"][0]["role"] == "system" and "<<" in body["messages"][0]["content"]
    assert "Example 1: How to<< build>> a<< bomb>>?" in user
    assert 'Activations: (" build", 5), (" bomb", 10)' in user
    assert 'Example 2: I can<<\'t help>>.\nActivations: ("\'t", 5), (" help", 4)' in user


def test_prompt_limits_contexts_and_keeps_examples_on_one_line() -> None:
    contexts = [[("a", 0.0), ("\n", 1.0), ("b", 0.0)]] * 5
    user = explainer_prompt(contexts, max_contexts=2)[-1]["content"]
    assert user.count("Example ") == 2
    assert "Example 1: a<<\\n>>b" in user
    assert explainer_prompt([[("x", 0.0)]])[-1]["content"] == "Example 1: x"


def test_key_sent_in_header_and_never_leaked(
    server: Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    server.reply = fail_if("bomb", ok())
    cfg = server.config()
    check_explainer(cfg)
    out = explain_features({"f1": [BOMB], "f2": [SORRY]}, cfg)
    assert [r["headers"].get("Authorization") for r in server.requests] == [f"Bearer {SECRET}"] * 2
    assert out == {"f1": None, "f2": "Requests for weapons."}
    assert caplog.records, "expected log records to check"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
    assert SECRET not in caplog.text
    assert SECRET not in repr(out) and SECRET not in repr(cfg)


def test_no_authorization_header_without_key(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = server.config()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        check_explainer(cfg)
    assert KEY_ENV in caplog.text and "unset" in caplog.text
    assert explain_features({"f1": [BOMB]}, cfg) == {"f1": "Requests for weapons."}
    assert "Authorization" not in server.requests[0]["headers"]


def test_server_error_gives_none_and_warning(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply = fail_if("bomb", ok("Refusal phrases."))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = explain_features({"f7": [BOMB], "f8": [SORRY]}, server.config())
    assert out == {"f7": None, "f8": "Refusal phrases."}
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "f7" in warning.getMessage() and "HTTP 500" in warning.getMessage()


def test_three_first_failures_raise_without_the_key(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.reply = fail_if("bomb", ok())
    features = {f"f{i}": [BOMB] for i in range(6)}
    with pytest.raises(RefusalScopeError) as info:
        explain_features(features, server.config())
    message = str(info.value)
    assert len(server.requests) == 3  # stopped, not hammering
    assert SECRET not in message
    assert KEY_ENV in message and "base_url" in message and "tiny-explainer" in message
    assert "HTTP 500" in message


def test_failures_after_a_success_do_not_raise(server: Server) -> None:
    server.reply = fail_if("bomb", ok())
    features = {"ok": [SORRY], **{f"bad{i}": [BOMB] for i in range(3)}}
    out = explain_features(features, server.config())
    assert out == {"ok": "Requests for weapons.", "bad0": None, "bad1": None, "bad2": None}


def test_timeout_bad_json_and_empty_answer_give_none(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply = ok()
    server.delay_s = 0.5
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert explain_features({"slow": [BOMB]}, server.config(timeout_s=0.1)) == {"slow": None}
    assert "slow" in caplog.text and "no answer within 0.1 s" in caplog.text
    server.delay_s = 0.0
    server.reply = lambda path, body: (200, b"not json")
    assert explain_features({"f": [BOMB]}, server.config()) == {"f": None}
    server.reply = ok("   \n  ")
    assert explain_features({"f": [BOMB]}, server.config()) == {"f": None}


def test_redirects_are_not_followed(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.reply = lambda path, body: (302, b"{}")
    assert explain_features({"f": [BOMB]}, server.config()) == {"f": None}
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions"]


def test_features_without_activation_are_not_sent(server: Server) -> None:
    out = explain_features({"dead": [[("a", 0.0)]], "empty": []}, server.config())
    assert out == {"dead": None, "empty": None}
    assert server.requests == []


def test_off_by_default() -> None:
    cfg = ExplainerConfig()
    assert not cfg.enabled
    check_explainer(cfg)
    with pytest.raises(RefusalScopeError, match="base_url"):
        explain_features({"f": [BOMB]}, cfg)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_url": "localhost:8000/v1", "model": "m"}, "http:// or https://"),
        ({"base_url": "ftp://host/v1", "model": "m"}, "http:// or https://"),
        ({"base_url": "http://localhost:8000/v1"}, "model is required"),
        ({"base_url": "http://user:pw@host/v1", "model": "m"}, "credentials"),
        ({"max_contexts": 0}, "max_contexts"),
        ({"timeout_s": 0.0}, "timeout_s"),
        ({"max_tokens": -1}, "max_tokens"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(RefusalScopeError, match=match):
        ExplainerConfig(**kwargs)


def test_key_pasted_as_variable_name_is_rejected_without_echo() -> None:
    with pytest.raises(RefusalScopeError) as info:
        ExplainerConfig(api_key_env=SECRET)
    assert SECRET not in str(info.value) and "NAME" in str(info.value)


def test_a_failed_request_is_retried_when_asked(server: Server) -> None:
    calls = []

    def once_500(path: str, body: dict) -> tuple[int, bytes]:
        calls.append(path)
        return (500, b"{}") if len(calls) == 1 else ok("Refusal phrases.")(path, body)

    server.reply = once_500
    out = explain_features({"f": [BOMB]}, server.config(retries=1))
    assert out == {"f": "Refusal phrases."} and len(server.requests) == 2
