"""An engine that talks to OpenAI-compatible HTTP servers (vLLM first of all).

* ``option_probs``: ``/v1/completions`` with ``max_tokens=1`` and
  ``logprobs=k``: the top-k next-token log-probabilities at the answer
  position; the variants of each letter ("A", " A") are summed, renormalised over
  the options, and the mass left outside the options is reported.
* ``generate``: ``/v1/completions`` with max_tokens, temperature, stop, seed
  (and ``n`` for consecutive seeds of one prompt: see ``generate``).
* ``loglikelihood``: ``/v1/completions`` with ``echo=True, max_tokens=0`` (the
  prompt's own token log-probabilities, a vLLM feature).

Each HTTP request carries up to ``prompts_per_request`` prompts (a list, as
vLLM accepts), so the client is not what limits a GPU server.

Several base URLs may be given (vLLM replicas, or one server per machine): each
request goes to the endpoint with the fewest requests in flight (ties in turn),
and a retry goes to another endpoint when there is one. Requests run on a
private asyncio loop in a background thread, so the engine is called from plain
sync code (and from code that already runs an event loop), with at most
``concurrency`` requests in flight; the server batches them.
"""
from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import threading
import time
from dataclasses import dataclass

from .base import (
    Engine,
    EngineError,
    GenerateRequest,
    Generation,
    LoglikRequest,
    OptionRequest,
    OptionResult,
    SampleRequest,
    letter_variants,
    renormalise,
)

# HTTP statuses worth another try: the server is busy, restarting or overloaded.
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class Endpoint:
    url: str
    client: object  # openai.AsyncOpenAI
    inflight: int = 0
    sent: int = 0  # requests (tries) sent here
    failed: int = 0  # tries that failed here


def _cause(exc: BaseException, timeout: float) -> str:
    """A short human reason for a failed try (connection refused, timed out, HTTP 503 ...)."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, openai.APIStatusError):
        msg = _status_message(exc)
        return f"HTTP {exc.status_code}" + (f": {msg}" if msg else "")
    seen, e = set(), exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, TimeoutError):
            return f"timed out after {timeout:g} s"
        if isinstance(e, (ConnectionResetError, BrokenPipeError)):
            return "connection lost"
        text = str(e).lower()
        if "connection refused" in text or "connect call failed" in text:
            return "connection refused"
        if "name or service not known" in text or "nodename nor servname" in text:
            return "unknown host"
        if "disconnected" in text or "connection reset" in text or "incomplete chunked read" in text or "peer closed" in text:
            return "connection lost"  # the server stopped while answering
        e = e.__cause__ or e.__context__
    if isinstance(exc, openai.APIConnectionError):
        return "connection lost"  # openai's generic "Connection error." with no better cause
    return (str(exc).splitlines() or [type(exc).__name__])[0][:160]


def _status_message(exc) -> str:
    body = getattr(exc, "body", None)
    msg = ""
    if isinstance(body, dict):
        inner = body.get("error")
        msg = body.get("message") or (inner.get("message") if isinstance(inner, dict) else inner) or ""
    msg = msg or getattr(exc, "message", "") or ""
    return " ".join(str(msg).split())[:200]


class OpenAIEngine(Engine):
    kind = "openai"
    exact_distributions = True

    def __init__(
        self,
        model: str,
        base_urls: str | list[str] | tuple[str, ...] = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        top_logprobs: int = 20,
        prompts_per_request: int = 32,
    ) -> None:
        """``max_retries`` counts tries in all (3 = one try and two retries);
        ``backoff`` is the first wait, doubled after each failed try (with jitter).
        ``top_logprobs`` is how many next-token candidates the server returns
        (vLLM allows 20 by default; OpenAI's completions endpoint allows 5).
        ``prompts_per_request`` caps the prompts (times ``n`` samples) sent in one
        HTTP request; 1 sends one request per prompt."""
        super().__init__()
        import openai

        if isinstance(base_urls, str):
            base_urls = [u for u in base_urls.replace(",", " ").split() if u]
        if not base_urls:
            raise EngineError("engine openai: no base URL given")
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max(1, int(max_retries))
        self.backoff = float(backoff)
        self.top_logprobs = int(top_logprobs)
        self.concurrency = max(1, int(concurrency))
        self.prompts_per_request = max(1, int(prompts_per_request))
        self.http_requests: dict[str, int] = {}  # HTTP requests per operation (first tries)
        # A local vLLM accepts any key; the client insists on one being set.
        key = api_key or os.environ.get("PERSONAE_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        # The client's own timeout type: openai 3.x wraps httpx2, and an httpx.Timeout breaks it.
        http_timeout = openai.Timeout(self.timeout, connect=min(10.0, self.timeout))
        self.endpoints = [
            Endpoint(url=u.rstrip("/"), client=openai.AsyncOpenAI(base_url=u.rstrip("/"), api_key=key, timeout=http_timeout, max_retries=0))
            for u in base_urls
        ]
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="personae-openai", daemon=True)
        self._thread.start()
        self._sem: asyncio.Semaphore | None = None
        self._closed = False

    @classmethod
    def from_server(cls, server, **kw) -> "OpenAIEngine":
        """An engine for a ``vllm_server.VLLMServer`` handle."""
        return cls(server.name, server.base_url, **kw)

    # ------------------------------------------------------------ plumbing

    def _run(self, coro):
        if self._closed:
            coro.close()
            raise EngineError("engine openai: used after close()")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _pick(self, avoid: Endpoint | None) -> Endpoint:
        pool = [e for e in self.endpoints if e is not avoid] or self.endpoints
        low = min(e.inflight for e in pool)
        least = [e for e in pool if e.inflight == low]
        return least[next(self._turn) % len(least)]

    async def _call(self, fn, op: str = "other"):
        """Run ``fn(client)`` with bounded concurrency, retries and backoff; return the response."""
        import openai

        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        self.http_requests[op] = self.http_requests.get(op, 0) + 1
        async with self._sem:
            # (endpoint, reason, outage): an outage is no answer at all (refused,
            # lost, timed out), worded "unreachable" whatever the reason.
            failures: list[tuple[Endpoint, str, bool]] = []
            ep = None
            for attempt in range(self.max_retries):
                ep = self._pick(avoid=ep if len(self.endpoints) > 1 else None)
                ep.inflight += 1
                ep.sent += 1
                try:
                    return await fn(ep.client)
                except openai.NotFoundError as e:
                    ep.failed += 1
                    raise EngineError(await self._not_found(ep, e)) from None
                except openai.APIStatusError as e:
                    ep.failed += 1
                    if e.status_code not in RETRY_STATUS:  # a bad request stays bad
                        raise EngineError(f"engine openai: {ep.url} rejected the request ({_cause(e, self.timeout)})") from None
                    failures.append((ep, _cause(e, self.timeout), False))
                except openai.APIConnectionError as e:  # refused, reset, DNS, timeout
                    ep.failed += 1
                    failures.append((ep, _cause(e, self.timeout), True))
                finally:
                    ep.inflight -= 1
                if attempt + 1 < self.max_retries:
                    await asyncio.sleep(self.backoff * (2**attempt) * (0.75 + 0.5 * random.random()))
            raise EngineError(self._give_up(failures))

    def _give_up(self, failures: list[tuple[Endpoint, str, bool]]) -> str:
        """One wording per kind of outage: '<url> unreachable after N tries (reasons)'
        when no try got an answer, '<url> failed after N tries (HTTP ...)' when the
        server answered with errors, 'no endpoint answered' across several URLs."""
        n = len(failures)
        urls = list(dict.fromkeys(ep.url for ep, _, _ in failures))
        if len(urls) == 1:
            reasons = list(dict.fromkeys(r for _, r, _ in failures))
            what = "unreachable" if all(outage for _, _, outage in failures) else "failed"
            return f"engine openai: {urls[0]} {what} after {n} tries ({'; '.join(reasons)})"
        last = {}
        for ep, r, _ in failures:
            last[ep.url] = r
        return f"engine openai: no endpoint answered after {n} tries (" + "; ".join(f"{u}: {r}" for u, r in last.items()) + ")"

    async def _not_found(self, ep: Endpoint, exc) -> str:
        """Say which models the server does serve: the usual cause of a 404 is a wrong name."""
        served = ""
        try:
            models = await ep.client.models.list()
            names = [m.id for m in models.data]
            served = f"; it serves: {', '.join(names)}" if names else ""
        except Exception:  # best effort: the message stays useful without the list
            pass
        if served or "model" in _status_message(exc).lower():
            return f"engine openai: model '{self.model}' is not served at {ep.url}{served}"
        return f"engine openai: {ep.url} answered 404 ({_status_message(exc) or 'not found'}); is the base URL right (it usually ends in /v1)?"

    async def _gather(self, coros):
        """All results in order; on the first error cancel the rest (fail fast, one message)."""
        tasks = [asyncio.ensure_future(c) for c in coros]
        try:
            return await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _completions(self, op: str, **kwargs) -> dict:
        """One completions request through the ``openai`` client (errors, auth,
        connection pool), its body sent and its answer read as plain JSON
        (``post`` with ``cast_to=object``): building the client's typed objects
        cost a fifth of the client's time with 40 samples per request, and
        ``completions.create`` walks every request body through its type
        transforms (~7% of a representatives run's client time); only a few
        fields are read."""
        try:
            body = await self._call(lambda c: c.post("/completions", body=kwargs, cast_to=object), op)
        except ValueError:  # an answer that says it is JSON but is not
            body = None
        if not isinstance(body, dict):
            raise EngineError(f"engine openai: the server's answer for model '{self.model}' is not a JSON object")
        self._count_usage(body.get("usage"))
        return body

    def _count_usage(self, usage: dict | None) -> None:
        if not isinstance(usage, dict):
            return
        cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
        self.stats.prompt_tokens += int(usage.get("prompt_tokens") or 0) - cached
        self.stats.cached_prompt_tokens += cached
        self.stats.generated_tokens += int(usage.get("completion_tokens") or 0)

    def _batch(self, op: str, n: int, coros: list) -> list:
        """Run the HTTP calls of one batched operation of ``n`` requests."""
        t0 = time.perf_counter()
        try:
            return self._run(self._gather(coros))
        finally:
            self.stats.seconds += time.perf_counter() - t0
            self.stats.record(op, n)

    # ------------------------------------------------------------ operations
    # Several prompts travel in one HTTP request (vLLM's completions API takes a
    # list; choices come back in prompt order, ``index`` = prompt x n + sample), so
    # the client's per-request cost is paid once per ``prompts_per_request``
    # prompts and a GPU server gets whole batches. Small batches are spread over
    # the ``concurrency`` slots (and so over the endpoints) rather than packed.

    def _sizes(self, n: int) -> int:
        return max(1, min(self.prompts_per_request, math.ceil(n / self.concurrency)))

    @staticmethod
    def _by_index(resp: dict, want: int, what: str, model: str) -> list[dict]:
        """The response's choices in ``index`` order; one line if any is missing."""
        out = [None] * want
        for ch in resp.get("choices") or ():
            i = ch.get("index") if isinstance(ch, dict) else None
            if isinstance(i, int) and 0 <= i < want:
                out[i] = ch
        if any(ch is None for ch in out):
            got = sum(ch is not None for ch in out)
            raise EngineError(f"engine openai: the server returned {got} of {want} {what} for model '{model}'")
        return out

    def option_probs(self, requests: list[OptionRequest]) -> list[OptionResult]:
        if not requests:
            return []
        slot: dict[str, int] = {}  # one distribution per distinct prompt (greedy: options only relabel it)
        where = [slot.setdefault(r.prompt, len(slot)) for r in requests]
        prompts = list(slot)
        size = self._sizes(len(prompts))
        chunks = [prompts[i : i + size] for i in range(0, len(prompts), size)]
        tops = [t for part in self._batch("option_probs", len(requests), [self._options(c) for c in chunks]) for t in part]
        out = []
        for req, i in zip(requests, where):
            top = tops[i]
            mass = [sum(math.exp(top[v]) for v in letter_variants(o) if v in top) for o in req.options]
            probs, outside = renormalise(mass)
            out.append(OptionResult(probs=probs, outside_mass=outside, method="logprobs"))
        return out

    async def _options(self, prompts: list[str]) -> list[dict]:
        """The top log-probabilities at the answer position of each prompt."""
        resp = await self._completions(
            "option_probs", model=self.model, prompt=prompts if len(prompts) > 1 else prompts[0], max_tokens=1,
            temperature=0.0, logprobs=self.top_logprobs)
        tops = []
        for ch in self._by_index(resp, len(prompts), "distributions", self.model):
            top = (ch.get("logprobs") or {}).get("top_logprobs")
            if not top or not isinstance(top[0], dict):
                raise EngineError(f"engine openai: the server returned no logprobs for model '{self.model}'")
            tops.append(top[0])
        return tops

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]:
        """Seeds: a request (prompt, seed s) is what vLLM answers to that prompt
        with ``seed=s`` -- alone, or in a list of prompts sharing seed s (every
        prompt of a list gets the request's seed). ``n`` samples of a prompt with
        seed s are vLLM's child requests with seeds s, s+1, ..., s+n-1, so
        requests for one prompt with consecutive seeds travel as one prompt with
        ``n``; the answer to each request stays a function of the request alone,
        whatever else was batched with it, and a run replays identically. At
        temperature 0 the seed changes nothing: equal prompts are asked once."""
        if not requests:
            return []
        # (prompt, max_tokens, temperature, stop) -> the seeds asked for (None: greedy)
        wanted: dict[tuple, set] = {}
        for r in requests:
            wanted.setdefault((r.prompt, r.max_tokens, r.temperature, r.stop), set()).add(r.seed if r.temperature > 0 else None)
        # Runs of consecutive seeds become one prompt with n; prompts sharing
        # (parameters, first seed, n) become one HTTP request.
        groups: dict[tuple, list[str]] = {}
        for (prompt, max_tokens, temperature, stop), seeds in wanted.items():
            if None in seeds:
                groups.setdefault((max_tokens, temperature, stop, None, 1), []).append(prompt)
                continue
            run: list[int] = []
            for s in sorted(seeds):
                if run and (s != run[-1] + 1 or len(run) >= self.prompts_per_request):
                    groups.setdefault((max_tokens, temperature, stop, run[0], len(run)), []).append(prompt)
                    run = []
                run.append(s)
            groups.setdefault((max_tokens, temperature, stop, run[0], len(run)), []).append(prompt)
        calls, keys = [], []
        total = sum(len(v) * k[4] for k, v in groups.items())
        size = self._sizes(total)
        for (max_tokens, temperature, stop, seed, n), prompts in groups.items():
            per = max(1, size // n)
            for i in range(0, len(prompts), per):
                part = prompts[i : i + per]
                calls.append(self._generate(part, max_tokens, temperature, stop, seed, n))
                keys.append((part, max_tokens, temperature, stop, seed, n))
        got: dict[tuple, Generation] = {}
        for (part, max_tokens, temperature, stop, seed, n), gens in zip(keys, self._batch("generate", len(requests), calls)):
            for k, g in enumerate(gens):
                prompt, j = part[k // n], k % n
                got[(prompt, max_tokens, temperature, stop, None if seed is None else seed + j)] = g
        return [got[(r.prompt, r.max_tokens, r.temperature, r.stop, r.seed if r.temperature > 0 else None)] for r in requests]

    def sample(self, requests: list[SampleRequest]) -> list[list[Generation]]:
        """Each request's ``n`` samples in one HTTP request with ``n`` and its seed
        (vLLM's k-th child has seed ``seed + k``: the samples ``generate`` would
        draw one by one), however large ``n`` is."""
        whole = [r for r in requests if r.seed + r.n <= 2**31]  # seeds that wrap past 2^31 are not the server's seed + k
        got = dict(zip(whole, self._batch("sample", len(whole), [
            self._generate([r.prompt], r.max_tokens, r.temperature, (), r.seed, r.n) for r in whole]))) if whole else {}
        rest = [r for r in requests if r not in got]
        got.update(zip(rest, super().sample(rest)))
        return [got[r] for r in requests]

    async def _generate(self, prompts: list[str], max_tokens: int, temperature: float, stop: tuple, seed: int | None, n: int) -> list[Generation]:
        kwargs: dict = dict(model=self.model, prompt=prompts if len(prompts) > 1 else prompts[0], max_tokens=max_tokens, temperature=temperature)
        if seed is not None:
            kwargs["seed"] = seed
        if n > 1:
            kwargs["n"] = n
        if stop:
            kwargs["stop"] = list(stop)
        several = len(prompts) * n > 1
        if several:
            # usage counts tokens per request; each answer's own count comes from
            # its sampled tokens' logprobs (grows with the answer, not the prompt)
            kwargs["logprobs"] = 0
        resp = await self._completions("generate", **kwargs)
        out = []
        for ch in self._by_index(resp, len(prompts) * n, "generations", self.model):
            if several:
                k = len((ch.get("logprobs") or {}).get("tokens") or ())
            else:
                k = int((resp.get("usage") or {}).get("completion_tokens") or 0)
            out.append(Generation(text=ch.get("text") or "", finish_reason="length" if ch.get("finish_reason") == "length" else "stop", n_tokens=k))
        return out

    def loglikelihood(self, requests: list[LoglikRequest]) -> list[float]:
        if not requests:
            return []
        size = self._sizes(len(requests))
        chunks = [requests[i : i + size] for i in range(0, len(requests), size)]
        return [x for part in self._batch("loglikelihood", len(requests), [self._loglik(c) for c in chunks]) for x in part]

    async def _loglik(self, reqs: list[LoglikRequest]) -> list[float]:
        """Sum of each continuation's token log-probabilities given its context.

        Tokens are attributed by their character offset in the echoed prompt: a
        token that starts inside the context counts as context (with the usual
        continuation " word" the boundary falls between tokens)."""
        texts = [r.context + r.continuation for r in reqs]
        resp = await self._completions(
            "loglikelihood", model=self.model, prompt=texts if len(texts) > 1 else texts[0], max_tokens=0, echo=True,
            logprobs=0, temperature=0.0)
        out = []
        for req, text, ch in zip(reqs, texts, self._by_index(resp, len(texts), "scores", self.model)):
            lp = ch.get("logprobs") or {}
            if lp.get("token_logprobs") is None or lp.get("text_offset") is None:
                raise EngineError(f"engine openai: the server returned no prompt logprobs (echo) for model '{self.model}'")
            start, end = len(req.context), len(text)
            total = 0.0
            for off, val in zip(lp["text_offset"], lp["token_logprobs"]):
                if start <= off < end and val is not None:
                    total += float(val)
            out.append(total)
        return out

    # ------------------------------------------------------------ bookkeeping

    def endpoint_counts(self) -> dict[str, int]:
        """Tries sent to each base URL (how the load was spread)."""
        return {e.url: e.sent for e in self.endpoints}

    def models(self) -> list[str]:
        """Model names served at the first endpoint (a cheap health check)."""
        async def go():
            return await self._call(lambda c: c.models.list())
        return [m.id for m in self._run(go()).data]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._thread.is_alive():  # interpreter shutdown: daemon thread already gone
            return

        async def shut():
            for e in self.endpoints:
                try:
                    await e.client.close()
                except Exception:
                    pass

        try:
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
        except Exception:
            pass
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()

    def __del__(self):
        # Never block in a finaliser: just stop the private loop.
        try:
            if not self._closed and self._thread.is_alive():
                self._closed = True
                self._loop.call_soon_threadsafe(self._loop.stop)
        except Exception:
            pass
