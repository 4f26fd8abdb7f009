"""``openai:<model>``: a judge behind any OpenAI-compatible chat-completions endpoint.

Each prompt is sent as one user message asking for a single token (``max_tokens=1``, ``temperature=0``,
``seed=0``) with ``logprobs=true, top_logprobs=20``; the first token's top-20 log-probabilities are turned
into probabilities and aggregated by :func:`aggregate_score`.

Environment: the API key comes from ``WORKBENCH_JUDGE_API_KEY`` or, failing that, ``OPENAI_API_KEY``; the
base URL from ``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``). The key is only ever put in the
``Authorization`` header: it is scrubbed from every error message and is never logged or cached.

Failure handling: HTTP 408/409/429/5xx, timeouts and connection errors are retried with exponential backoff
(``base_delay * 2**attempt``, at most ``max_delay``, or the server's ``Retry-After`` when larger); when
they persist a :class:`WorkbenchError` is raised after the other in-flight requests finish, and every
judgment finished before it is already in the cache. Other HTTP errors (400, 401, 404, ...) raise at once.
A 200 response without the expected fields (no ``choices[0].logprobs.content[0].top_logprobs``) is not an
exception: its judgment has ``score=None`` and ``raw={"error": ...}``, is logged as a warning, and is not
cached, so a rerun asks again.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .._errors import WorkbenchError
from ._base import Judge, Judgment, aggregate_score

log = logging.getLogger(__name__)

KEY_ENV_VARS = ("WORKBENCH_JUDGE_API_KEY", "OPENAI_API_KEY")
BASE_URL_ENV_VAR = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504}) | frozenset(range(520, 530))


class _Retryable(Exception):
    """A transient failure (rate limit, server error, timeout, dropped connection)."""

    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    """A failure that retrying will not fix (bad request, bad key, unknown model)."""


class _Skipped(Exception):
    """Not sent: another request of the same batch already failed for good."""


def resolve_api_key() -> str:
    """The judge API key from the environment; a :class:`WorkbenchError` naming the variables if unset."""
    for var in KEY_ENV_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return value
    raise WorkbenchError(
        f"the openai judge needs an API key: set {KEY_ENV_VARS[1]} (or {KEY_ENV_VARS[0]}, which takes "
        f"precedence); base URL from {BASE_URL_ENV_VAR} (default {DEFAULT_BASE_URL})"
    )


def parse_top_logprobs(body: Any) -> dict[str, float]:
    """Candidate first tokens -> probabilities from a chat-completions response body.

    Raises ``ValueError`` describing the first missing or malformed field.
    """
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise ValueError("response has no choices[0]") from None
    logprobs = choice.get("logprobs") if isinstance(choice, dict) else None
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content:
        raise ValueError("response has no choices[0].logprobs.content (does the server support logprobs?)")
    top = content[0].get("top_logprobs") if isinstance(content[0], dict) else None
    if not isinstance(top, list) or not top:
        raise ValueError("response has no choices[0].logprobs.content[0].top_logprobs")
    probs: dict[str, float] = {}
    for entry in top:
        try:
            token, logprob = str(entry["token"]), float(entry["logprob"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"malformed top_logprobs entry {entry!r}") from None
        if math.isnan(logprob):
            raise ValueError(f"malformed top_logprobs entry {entry!r}")
        probs[token] = probs.get(token, 0.0) + math.exp(min(logprob, 0.0))
    return probs


class OpenAIJudge(Judge):
    """A judge served over the OpenAI chat-completions wire format (see the module docstring).

    ``concurrency`` caps simultaneous requests; ``retries`` is the number of retries after the first try;
    ``base_delay``/``max_delay`` shape the exponential backoff; ``timeout`` is per request (seconds).
    ``api_key`` and ``base_url`` override the environment.
    """

    def __init__(
        self,
        model: str,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        concurrency: int = 8,
        retries: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        timeout: float = 60.0,
        top_logprobs: int = 20,
    ):
        if not model:
            raise WorkbenchError("openai judge spec needs a model name: 'openai:<model>'")
        if concurrency < 1:
            raise WorkbenchError(f"judge concurrency must be >= 1, got {concurrency}")
        self.model = model
        self.name = f"openai:{model}"
        self._key = api_key or resolve_api_key()
        base = base_url or os.environ.get(BASE_URL_ENV_VAR, "").strip() or DEFAULT_BASE_URL
        self.base_url = base.rstrip("/")
        self.concurrency = int(concurrency)
        self.retries = int(retries)
        self.base_delay = float(base_delay)
        self.max_delay = float(max_delay)
        self.timeout = float(timeout)
        self.top_logprobs = int(top_logprobs)
        super().__init__(cache_dir)

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIJudge(name={self.name!r}, base_url={self.base_url!r}, concurrency={self.concurrency})"

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _payload(self, prompt: str) -> bytes:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
            "seed": 0,
        }
        return json.dumps(body).encode("utf-8")

    def _post_once(self, payload: bytes) -> bytes:
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions",
            data=payload,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Authorization": f"Bearer {self._key}",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = ""
            try:
                detail = exc.read(500).decode("utf-8", errors="replace")
            except Exception:  # the body is only a courtesy
                pass
            msg = self._scrub(f"HTTP {exc.code} {exc.reason}: {detail}".strip())
            if exc.code in RETRY_STATUS:
                raise _Retryable(msg, _retry_after(exc.headers)) from None
            raise _Fatal(msg) from None
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets are all OSError
            reason = getattr(exc, "reason", exc)
            raise _Retryable(self._scrub(f"{type(exc).__name__}: {reason}")) from None
        return raw

    def _request(self, prompt: str, stop: threading.Event) -> Judgment:
        payload = self._payload(prompt)
        last = ""
        for attempt in range(self.retries + 1):
            if stop.is_set():
                raise _Skipped()
            try:
                raw = self._post_once(payload)
                break
            except _Fatal:
                stop.set()
                raise
            except _Retryable as exc:
                last = str(exc)
                if attempt == self.retries:
                    stop.set()
                    raise
                delay = min(self.max_delay, self.base_delay * (2**attempt))
                delay = max(delay, min(self.max_delay, exc.retry_after))
                log.info(
                    "judge %s: %s; retry %d/%d in %.2fs", self.name, last, attempt + 1, self.retries, delay
                )
                if stop.wait(delay):  # another request failed for good meanwhile
                    raise _Skipped() from None
        if self._key and self._key.encode() in raw:  # a server echoing the key must not get it cached
            raw = raw.replace(self._key.encode(), b"***")
        try:
            try:
                body = json.loads(raw)
            except ValueError:
                raise ValueError(f"response is not JSON: {raw[:100]!r}") from None
            probs = parse_top_logprobs(body)
        except ValueError as exc:
            return Judgment(score=None, raw={"error": self._scrub(str(exc))})
        return Judgment(score=aggregate_score(probs), raw=probs)

    def _judge(self, prompts: list[str]) -> Iterator[tuple[int, Judgment]]:
        failure: BaseException | None = None
        malformed: list[str] = []
        stop = threading.Event()  # set by the first request that fails for good: no new requests start
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge")
        try:
            pending: dict[Future[Judgment], int] = {
                pool.submit(self._request, p, stop): i for i, p in enumerate(prompts)
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    if fut.cancelled():
                        continue
                    exc = fut.exception()
                    if isinstance(exc, _Skipped):
                        continue
                    if exc is not None:
                        if failure is None:
                            failure = exc
                            # Stop starting new requests; the ones in flight finish and are cached.
                            for other in pending:
                                other.cancel()
                        continue
                    judgment = fut.result()
                    if "error" in judgment.raw:
                        malformed.append(judgment.raw["error"])
                    yield i, judgment
        finally:
            stop.set()  # on an interrupt too: requests in flight finish, none retries or starts
            pool.shutdown(wait=True, cancel_futures=True)
        if malformed:
            log.warning(
                "judge %s: %d of %d responses were malformed and got no score (first: %s)",
                self.name,
                len(malformed),
                len(prompts),
                malformed[0],
            )
        if failure is not None:
            if isinstance(failure, _Retryable):
                raise WorkbenchError(
                    f"judge {self.name} at {self.base_url} still failing after {self.retries} retries: {failure}; "
                    "judgments finished before this are cached, rerun to continue"
                ) from None
            if isinstance(failure, _Fatal):
                raise WorkbenchError(
                    f"judge {self.name} at {self.base_url} refused the request: {failure}"
                ) from None
            raise failure


def _retry_after(headers: Any) -> float:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return max(0.0, float(value)) if value else 0.0
    except (TypeError, ValueError):
        return 0.0
