"""``openai:<model>``: a judge behind any OpenAI-compatible chat-completions endpoint.

Each prompt is sent as one user message asking for a single token (``max_tokens=1``, ``temperature=0``,
``seed=0``) with ``logprobs=true, top_logprobs=20``; the first token's top-20 log-probabilities are turned
into probabilities and aggregated by :func:`aggregate_score`.

Environment: the API key comes from ``WORKBENCH_JUDGE_API_KEY`` or, failing that, ``OPENAI_API_KEY``; the
base URL from ``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``). The key is only ever put in the
``Authorization`` header. Everything a server sends back, and every error message, passes through
:class:`KeyScrubber` before it is parsed, stored, cut short or logged: it replaces the key in whatever form a
server may echo it (raw, JSON ``\\uXXXX`` or ``\\/`` escapes, percent-encoding, Python ``repr`` escapes,
base64, ...) with ``***``. JSON responses are scrubbed after decoding (every string, recursively), so no
escape hides the key; text is cut only after scrubbing, and a beginning of the key left at a cut is dropped.
A key with a character that cannot go in an HTTP header is refused at construction, without quoting it.

Failure handling: HTTP 408/409/429/5xx, timeouts and connection errors are retried with exponential backoff
(``base_delay * 2**attempt``, at most ``max_delay``, or the server's ``Retry-After`` when larger); when
they persist a :class:`WorkbenchError` is raised after the other in-flight requests finish, and every
judgment finished before it is already in the cache. Other HTTP errors (400, 401, 404, ...) raise at once.
A 200 response without the expected fields (no ``choices[0].logprobs.content[0].top_logprobs``) is not an
exception: its judgment has ``score=None`` and ``raw={"error": ...}``, is logged as a warning, and is not
cached, so a rerun asks again.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import logging
import math
import os
import re
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
MAX_ERROR_BODY = 65536
"""Bytes of an HTTP error body read (and scrubbed) before :data:`ERROR_DETAIL` characters of it are shown."""
ERROR_DETAIL = 500
MIN_KEY_PREFIX = 4
"""A beginning of the key at least this long at the very end of a text (left by a cut) is scrubbed too."""


class _Retryable(Exception):
    """A transient failure (rate limit, server error, timeout, dropped connection)."""

    def __init__(self, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.retry_after = retry_after


class _Fatal(Exception):
    """A failure that retrying will not fix (bad request, bad key, unknown model)."""


class _Skipped(Exception):
    """Not sent: another request of the same batch already failed for good."""


_BACKSLASHES = r"\\+"  # one backslash, or several for a JSON string quoted inside another one
_SHORT_ESCAPES = {'"': '"', "\\": "\\\\", "/": "/", "\b": "b", "\f": "f", "\n": "n", "\r": "r", "\t": "t"}
_TAIL_SLACK = 16
"""Characters allowed after a key beginning at the end of a text: part of the next character's escape."""


def _hex(value: int, width: int = 0) -> str:
    """``value`` in hex as a regex matching either case: ``_hex(0x2F, 4) == "002[fF]"``."""
    return "".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{value:0{width}x}")


def _lit(text: str) -> str:
    """A regex matching ``text`` literally, written in ASCII (which ``re`` compiles several times faster)."""
    return "".join(re.escape(c) if c < "\x80" else f"\\U{ord(c):08x}" for c in text)


def _char_forms(ch: str) -> str:
    """A regex for one character as a server may send it back (see :class:`KeyScrubber`)."""
    code, data = ord(ch), ch.encode("utf-8")
    forms = [_lit(ch), "".join("%" + _hex(b, 2) for b in data), f"&#0*{code};", f"&#[xX]0*{_hex(code)};"]
    if code < 0x10000:
        forms.append(_BACKSLASHES + "u" + _hex(code, 4))
    else:
        hi, lo = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        forms += [
            _BACKSLASHES + "u" + _hex(hi, 4) + _BACKSLASHES + "u" + _hex(lo, 4),
            r"\\+U" + _hex(code, 8),
        ]
    if code < 0x100:
        forms.append(_BACKSLASHES + "x" + _hex(code, 2))
    if ch in _SHORT_ESCAPES:
        forms.append(_BACKSLASHES + re.escape(_SHORT_ESCAPES[ch]))
    if code >= 0x80:  # UTF-8 bytes as repr escapes or read as Latin-1; a character lost in decoding
        forms += ["".join(_BACKSLASHES + "x" + _hex(b, 2) for b in data), _lit(data.decode("latin-1"))]
        forms += [_lit("\ufffd"), r"\?"]
    return "(?:" + "|".join(forms) + ")"


class KeyScrubber:
    """Replaces a secret with ``***`` in text, in every form a server or an HTTP client may give it back.

    Each character of the key may appear as itself or as any of: a JSON or Python escape (``\\u00e9``,
    ``\\u00E9``, ``\\/``, ``\\x2f``; with one or more backslashes, so a JSON string quoted inside another one
    counts), percent-encoding of its UTF-8 bytes (``%2F``, ``%c3%a9``), an HTML character reference, its
    UTF-8 bytes as ``repr`` escapes or read as Latin-1, and, for a non-ASCII character, ``?`` or U+FFFD.
    Forms mix freely within one occurrence. The base64 encoding of the key (standard or URL-safe
    alphabet) is found at any alignment inside a longer base64 text: the 4-character groups that hold key
    bytes only, their letters and digits as themselves and their ``+/=-_`` in any of the forms above.

    :meth:`scrub` also drops a beginning of the key (``MIN_KEY_PREFIX`` characters or more, in those
    forms) that ends the text, as a cut or a read limit leaves it; :meth:`clip` scrubs first, cuts after
    and scrubs the cut text again. Over-scrubbing (a ``?`` standing for a non-ASCII key character, a
    text ending in the key's first characters) is accepted: ``***`` in a message costs nothing.
    """

    def __init__(self, key: str):
        self._units = [re.compile(_char_forms(ch)) for ch in key]
        forms = ["".join(u.pattern for u in self._units)]
        data = key.encode("utf-8")
        for skip in range(3):  # the key starts 0, 1 or 2 bytes into a 3-byte base64 group
            whole = data[skip:][: (len(data) - skip) // 3 * 3]
            if len(whole) >= 6:
                for enc in (base64.b64encode(whole), base64.urlsafe_b64encode(whole)):
                    forms.append("".join(c if c.isalnum() else _char_forms(c) for c in enc.decode()))
        self._pattern = re.compile("|".join(forms)) if key else None

    def scrub(self, text: str) -> str:
        """``text`` with every occurrence of the key, and a beginning of it at the very end, as ``***``."""
        if self._pattern is None:
            return text
        return self._drop_prefix(self._pattern.sub("***", text))

    def clip(self, text: str, limit: int) -> str:
        """``text`` scrubbed, then cut to ``limit`` characters (``...`` marks a cut), then scrubbed again."""
        text = self.scrub(text)
        return text if len(text) <= limit else self.scrub(text[:limit]) + "..."

    def scrub_json(self, value: Any) -> Any:
        """A decoded JSON value with every string in it (keys included) scrubbed."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, list):
            return [self.scrub_json(v) for v in value]
        if isinstance(value, dict):
            return {self.scrub(str(k)): self.scrub_json(v) for k, v in value.items()}
        return value

    def _drop_prefix(self, text: str) -> str:
        if len(self._units) <= MIN_KEY_PREFIX:
            return text
        start = max(0, len(text) - _TAIL_SLACK * len(self._units))
        for m in self._units[0].finditer(text, start):
            pos, n = m.end(), 1
            while n < len(self._units) and (nxt := self._units[n].match(text, pos)):
                pos, n = nxt.end(), n + 1
            if n >= MIN_KEY_PREFIX and len(text) - pos < _TAIL_SLACK:
                return text[: m.start()] + "***"
        return text


_scrubber = functools.lru_cache(maxsize=4)(KeyScrubber)  # compiling takes ~0.5 ms per key character


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
        bad = [i for i, ch in enumerate(self._key) if not (" " <= ch <= "~" or "\xa0" <= ch <= "\xff")]
        if bad:  # http.client would quote the whole header value in its error
            raise WorkbenchError(
                f"the judge API key has a character at position {bad[0]} that cannot be sent in an HTTP "
                "header (only printable Latin-1)"
            )
        self._secret = _scrubber(self._key)
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
        return self._scrub(
            f"OpenAIJudge(name={self.name!r}, base_url={self.base_url!r}, concurrency={self.concurrency})"
        )

    def _scrub(self, text: str) -> str:
        return self._secret.scrub(text)

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
        try:
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
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = ""
            try:  # the whole body is scrubbed before it is cut, so no cut can split the key
                detail = self._secret.clip(_decode(exc.read(MAX_ERROR_BODY)), ERROR_DETAIL)
            except Exception:  # the body is only a courtesy
                pass
            msg = self._scrub(f"HTTP {exc.code} {exc.reason}: {detail}".strip())
            if exc.code in RETRY_STATUS:
                raise _Retryable(msg, _retry_after(exc.headers)) from None
            raise _Fatal(msg) from None
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets are all OSError
            reason = getattr(exc, "reason", exc)
            raise _Retryable(self._scrub(f"{type(exc).__name__}: {reason}")) from None
        except ValueError as exc:  # a URL or header that cannot be sent; the message may quote either
            raise _Fatal(self._scrub(f"{type(exc).__name__}: {exc}")) from None
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
        try:
            try:  # scrubbed after decoding: no JSON escape can hide the key from the scrubber
                body = self._secret.scrub_json(json.loads(raw))
            except (ValueError, RecursionError):
                shown = self._secret.clip(_decode(raw[:MAX_ERROR_BODY]), 100)
                raise ValueError(f"response is not JSON: {shown!r}") from None
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
                    self._scrub(
                        f"judge {self.name} at {self.base_url} still failing after {self.retries} retries: "
                        f"{failure}; judgments finished before this are cached, rerun to continue"
                    )
                ) from None
            if isinstance(failure, _Fatal):
                raise WorkbenchError(
                    self._scrub(f"judge {self.name} at {self.base_url} refused the request: {failure}")
                ) from None
            raise failure


def _decode(data: bytes) -> str:
    """Response bytes as text (UTF-8, or the UTF-16/32 that ``json`` detects), bad bytes replaced."""
    return data.decode(json.detect_encoding(data), errors="replace")


def _retry_after(headers: Any) -> float:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return max(0.0, float(value)) if value else 0.0
    except (TypeError, ValueError):
        return 0.0
