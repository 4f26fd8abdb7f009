"""The openai judge against a local OpenAI-compatible server (http.server on 127.0.0.1, in a thread)."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from workbench._errors import WorkbenchError
from workbench.judges import make_judge

KEY = "sk-test-SECRET-abc123"
FAST = {"retries": 2, "base_delay": 0.001, "max_delay": 0.01, "timeout": 2.0}


def completion(prompt: str) -> dict[str, Any]:
    """A well-formed response: prompts 'score:K' get 90% on K (half as ' K') and 10% on a word."""
    k = prompt.split("score:")[-1].split()[0] if "score:" in prompt else "50"
    top = [
        {"token": k, "logprob": math.log(0.45)},
        {"token": f" {k}", "logprob": math.log(0.45)},
        {"token": "Sorry", "logprob": math.log(0.10)},
    ]
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": k},
                "logprobs": {"content": [{"token": k, "logprob": math.log(0.45), "top_logprobs": top}]},
                "finish_reason": "length",
            }
        ],
    }


class FakeServer:
    """Counts requests and in-flight concurrency; ``behave(n, body)`` -> (status, json body or bytes)."""

    def __init__(self, behave: Callable[[int, dict], tuple[int, Any]], delay: float = 0.0):
        self.behave = behave
        self.delay = delay
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    n = len(server.requests)
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization", ""))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                counted = True
                try:
                    if server.delay:
                        time.sleep(server.delay)
                    status, payload = server.behave(n, body)
                    if isinstance(payload, float):  # sleep (to provoke a client timeout), then answer
                        time.sleep(payload)
                        status, payload = 200, completion(body["messages"][0]["content"])
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    # leave the in-flight count before answering: once the client has the answer it may
                    # start its next request before this thread gets to run again
                    with server.lock:
                        server.in_flight -= 1
                        counted = False
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    if counted:
                        with server.lock:
                            server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(n: int, body: dict) -> tuple[int, Any]:
    return 200, completion(body["messages"][0]["content"])


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []
    monkeypatch.delenv("WORKBENCH_JUDGE_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)

    def start(behave: Callable[[int, dict], tuple[int, Any]] = ok, delay: float = 0.0) -> FakeServer:
        s = FakeServer(behave, delay)
        servers.append(s)
        monkeypatch.setenv("OPENAI_BASE_URL", s.url)
        return s

    yield start
    for s in servers:
        s.close()


def all_cache_text(cache_dir: Path) -> str:
    return "".join(p.read_text() for p in cache_dir.rglob("*") if p.is_file())


def test_normal_response_scores_and_sends_the_wire_format(serve, tmp_path):
    server = serve()
    judge = make_judge("openai:gpt-test", cache_dir=tmp_path, **FAST)
    out = judge.score(["rate this score:42", "score:7"])
    assert [j.score for j in out] == [pytest.approx(42.0), pytest.approx(7.0)]
    assert out[0].raw["42"] == pytest.approx(0.45) and out[0].raw[" 42"] == pytest.approx(0.45)
    assert not out[0].cached
    body = server.requests[0]
    assert body["model"] == "gpt-test"
    assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["seed"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["messages"] in (
        [{"role": "user", "content": "rate this score:42"}],
        [{"role": "user", "content": "score:7"}],
    )
    assert server.auth[0] == f"Bearer {KEY}"
    assert KEY not in all_cache_text(tmp_path)
    assert KEY not in repr(judge)


def test_cache_hits_are_not_requested_again(serve, tmp_path):
    server = serve()
    prompts = ["score:10", "score:20", "score:10"]  # a duplicate is judged once
    first = make_judge("openai:gpt-test", cache_dir=tmp_path, **FAST).score(prompts)
    assert len(server.requests) == 2
    again = make_judge("openai:gpt-test", cache_dir=tmp_path, **FAST).score(prompts + ["score:30"])
    assert len(server.requests) == 3  # only the new prompt
    assert [j.cached for j in again] == [True, True, True, False]
    assert [j.score for j in again[:3]] == [j.score for j in first]
    other = make_judge("openai:other-model", cache_dir=tmp_path, **FAST).score(["score:10"])
    assert not other[0].cached and len(server.requests) == 4  # the key includes the judge name


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_error_then_success_is_retried(serve, tmp_path, status):
    server = serve(lambda n, body: (status, {"error": "busy"}) if n == 0 else ok(n, body))
    out = make_judge("openai:gpt-test", cache_dir=tmp_path, **FAST).score(["score:64"])
    assert out[0].score == pytest.approx(64.0)
    assert len(server.requests) == 2


def test_timeout_is_retried(serve, tmp_path):
    server = serve(lambda n, body: (200, 0.5) if n == 0 else ok(n, body))
    opts = {**FAST, "timeout": 0.2}
    out = make_judge("openai:gpt-test", cache_dir=tmp_path, **opts).score(["score:5"])
    assert out[0].score == pytest.approx(5.0)
    assert len(server.requests) == 2


def test_malformed_response_gives_none_with_error_and_is_not_cached(serve, tmp_path, caplog):
    bodies = [{"choices": [{"message": {"content": "5"}}]}, b"not json at all", {"nothing": 1}]
    server = serve(lambda n, body: (200, bodies[n % 3]))
    judge = make_judge("openai:gpt-test", cache_dir=tmp_path, concurrency=1, **FAST)
    with caplog.at_level(logging.WARNING):
        out = judge.score(["a", "b", "c"])
    assert all(j.score is None for j in out)
    errors = sorted(j.raw["error"] for j in out)
    assert any("logprobs" in e for e in errors) and any("not JSON" in e for e in errors)
    assert any("choices[0]" in e for e in errors)
    assert "malformed" in caplog.text
    assert len(server.requests) == 3  # malformed responses are not retried...
    judge.score(["a"])
    assert len(server.requests) == 4  # ...but are not cached either: a rerun asks again


def test_server_that_stays_down_fails_clearly_and_keeps_earlier_judgments(serve, tmp_path):
    healthy = {"up": True}

    def behave(n: int, body: dict) -> tuple[int, Any]:
        if n >= 2 and not healthy["up"]:
            return 503, {"error": "down"}
        if n == 1:
            healthy["up"] = False  # goes down after answering the second request
        return ok(n, body)

    server = serve(behave)
    prompts = [f"score:{k}" for k in (1, 2, 3, 4, 5)]
    judge = make_judge("openai:gpt-test", cache_dir=tmp_path, concurrency=1, **FAST)
    with pytest.raises(WorkbenchError, match=r"still failing after 2 retries.*HTTP 503") as err:
        judge.score(prompts)
    assert KEY not in str(err.value)
    assert len(server.requests) == 2 + 3  # two answers, then one prompt tried 1 + 2 retries; no more started
    rows = [json.loads(line) for line in (tmp_path / "openai_gpt-test.jsonl").read_text().splitlines()]
    assert sorted(r["score"] for r in rows) == [1.0, 2.0]

    healthy["up"] = True  # back up: the rerun only asks for what is missing
    server.behave = ok
    out = make_judge("openai:gpt-test", cache_dir=tmp_path, **FAST).score(prompts)
    assert [j.score for j in out] == pytest.approx([1, 2, 3, 4, 5])
    assert [j.cached for j in out] == [True, True, False, False, False]
    assert len(server.requests) == 5 + 3


def test_connection_refused_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = make_judge("openai:gpt-test", cache_dir=tmp_path, base_url=f"http://127.0.0.1:{port}/v1", **FAST)
    with pytest.raises(WorkbenchError, match="still failing after 2 retries"):
        judge.score(["score:1"])


def test_fatal_http_error_raises_at_once_without_the_key(serve, tmp_path, caplog):
    # A server that echoes the Authorization header back in its error body.
    server = serve(lambda n, body: (401, {"error": f"bad key {server.auth[-1]}"}))
    judge = make_judge("openai:gpt-test", cache_dir=tmp_path, **FAST)
    with caplog.at_level(logging.DEBUG), pytest.raises(WorkbenchError, match="HTTP 401") as err:
        judge.score(["score:1"])
    assert KEY not in str(err.value) and "***" in str(err.value)
    assert KEY not in caplog.text
    assert len(server.requests) == 1  # not retried


def test_missing_key_names_the_env_var(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("WORKBENCH_JUDGE_API_KEY", raising=False)
    with pytest.raises(WorkbenchError, match="OPENAI_API_KEY"):
        make_judge("openai:gpt-test", cache_dir=tmp_path)


def test_workbench_key_takes_precedence(serve, monkeypatch, tmp_path):
    server = serve()
    monkeypatch.setenv("WORKBENCH_JUDGE_API_KEY", "sk-workbench-key")
    make_judge("openai:gpt-test", cache_dir=tmp_path, **FAST).score(["score:3"])
    assert server.auth == ["Bearer sk-workbench-key"]


def test_concurrency_limit_is_respected(serve, tmp_path):
    server = serve(delay=0.05)
    judge = make_judge("openai:gpt-test", cache_dir=tmp_path, concurrency=3, **FAST)
    out = judge.score([f"score:{k}" for k in range(12)])
    assert [j.score for j in out] == pytest.approx(list(range(12)))
    assert server.max_in_flight <= 3
    assert server.max_in_flight >= 2  # and it does run requests in parallel
    assert KEY not in all_cache_text(tmp_path)
