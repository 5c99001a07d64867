"""An engine over any LangChain chat model (``BaseChatModel``): hosted providers.

Multiple-choice distributions come from one of two methods, and
``OptionResult.method`` says which:

* ``"logprobs"``, where the provider returns top log-probabilities (OpenAI,
  vLLM, ...): one greedy call with ``logprobs=True, top_logprobs=k`` and a few
  tokens. Chat models often open with "(" before the letter, so we walk the
  first generated positions: while the greedy token is only "(" or blank, the
  letters seen at that position are added with the probability of reaching it,
  and the walk continues into the next position (P(A) = P("A") + P("(")·P("A" | "(")).
  Letter variants ("A", " A", "(A", "A)") are summed, renormalised over the
  options; the rest is ``outside_mass``.
* ``f"sampling:{k}"`` otherwise: k answers at temperature 1 (the Anthology
  procedure), the letter parsed from each; answers with no option letter are
  re-asked (up to ``resample_rounds`` times) and their share is ``outside_mass``.

``mode="auto"`` tries logprobs once and falls back to sampling for good when
the provider refuses the parameters or returns none.
"""
from __future__ import annotations

import math
import re
import time

from .base import Engine, EngineError, GenerateRequest, Generation, OptionRequest, OptionResult, renormalise

_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_LEAD_LETTER = re.compile(r"^\W*([A-Z])(?![A-Za-z])")
_ANY_LETTER = re.compile(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])")


def parse_letter(text: str, options: tuple[str, ...]) -> str | None:
    """The option letter an answer names: "(B) ...", "B", "B. Sometimes", "The answer is B"."""
    for pattern in (_PAREN_LETTER, _LEAD_LETTER):
        m = pattern.search(text)
        if m and m.group(1) in options:
            return m.group(1)
    for m in _ANY_LETTER.finditer(text):
        if m.group(1) in options and m.group(1) not in ("I",):  # "I think ..." is not option I
            return m.group(1)
    return None


def _norm(token: str) -> str:
    return token.strip().strip("().:").strip()


def _message_text(msg) -> str:
    t = getattr(msg, "text", None)  # a str property in langchain-core >= 1, a method before
    if isinstance(t, str):
        return str(t)
    if callable(t):
        return t()
    c = msg.content
    return c if isinstance(c, str) else "".join(b.get("text", "") if isinstance(b, dict) else str(b) for b in c)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:240]}" if text else type(exc).__name__


class LangChainEngine(Engine):
    kind = "langchain"

    def __init__(
        self,
        chat_model,
        mode: str = "auto",
        samples: int = 20,
        top_logprobs: int = 20,
        answer_tokens: int = 4,
        sample_tokens: int = 8,
        resample_rounds: int = 2,
        concurrency: int = 8,
        system: str | None = None,
        seed: bool | None = None,
        n_per_call: bool | None = None,
        model: str | None = None,
    ) -> None:
        """``chat_model``: e.g. ``ChatOpenAI(model=..., base_url=...)``.
        ``mode``: "auto", "logprobs" or "sampling". ``samples``: k for sampling.
        ``seed``: pass GenerateRequest.seed to the provider (default: only for
        OpenAI-compatible models, which accept it). ``n_per_call``: ask for the
        k samples in one call with ``n=k`` (default: for OpenAI-compatible models;
        the prompt is then evaluated once). ``system``: an optional system
        message put before every prompt."""
        super().__init__()
        if mode not in ("auto", "logprobs", "sampling"):
            raise ValueError(f"mode must be auto, logprobs or sampling, not {mode!r}")
        self.chat = chat_model
        self.mode = mode
        self.samples = int(samples)
        self.top_logprobs = int(top_logprobs)
        self.answer_tokens = int(answer_tokens)
        self.sample_tokens = int(sample_tokens)
        self.resample_rounds = int(resample_rounds)
        self.concurrency = int(concurrency)
        self.system = system
        self.provider = type(chat_model).__name__
        self.model = model or getattr(chat_model, "model_name", None) or getattr(chat_model, "model", None) or self.provider
        openai_like = self.provider in ("ChatOpenAI", "AzureChatOpenAI")
        self.seed = seed if seed is not None else openai_like
        self.n_per_call = n_per_call if n_per_call is not None else openai_like
        self.fallback_reason = ""  # why auto mode chose sampling
        self._sample_seed = 0

    @property
    def exact_distributions(self) -> bool:  # type: ignore[override]
        return self.mode == "logprobs"

    def fingerprint(self) -> dict:
        return {"kind": self.kind, "provider": self.provider, "model": self.model,
                "method": self.mode if self.mode != "sampling" else f"sampling:{self.samples}"}

    # ------------------------------------------------------------ plumbing

    def _messages(self, prompt: str):
        from langchain_core.messages import HumanMessage, SystemMessage

        return ([SystemMessage(self.system)] if self.system else []) + [HumanMessage(prompt)]

    def _batch(self, runnable, prompts: list[str], **invoke_kw) -> list:
        try:
            return runnable.batch([self._messages(p) for p in prompts], config={"max_concurrency": self.concurrency}, **invoke_kw)
        except EngineError:
            raise
        except Exception as e:  # provider errors: one line, the provider's own retries are done
            raise EngineError(f"engine langchain ({self.provider} {self.model}): {_one_line(e)}") from None

    def _count(self, msgs) -> None:
        for m in msgs:
            u = getattr(m, "usage_metadata", None) or {}
            cached = int((u.get("input_token_details") or {}).get("cache_read", 0) or 0)
            self.stats.prompt_tokens += int(u.get("input_tokens", 0) or 0) - cached
            self.stats.cached_prompt_tokens += cached
            self.stats.generated_tokens += int(u.get("output_tokens", 0) or 0)

    # ------------------------------------------------------------ option_probs

    def option_probs(self, requests: list[OptionRequest]) -> list[OptionResult]:
        if not requests:
            return []
        t0 = time.perf_counter()
        try:
            if self.mode in ("auto", "logprobs"):
                out = self._by_logprobs(requests)
                if out is not None:
                    return out
            return self._by_sampling(requests)
        finally:
            self.stats.seconds += time.perf_counter() - t0
            self.stats.record("option_probs", len(requests))

    def _by_logprobs(self, requests: list[OptionRequest]) -> list[OptionResult] | None:
        runnable = self.chat.bind(logprobs=True, top_logprobs=self.top_logprobs, max_tokens=self.answer_tokens, temperature=0.0)
        if self.mode == "auto":
            try:
                first = runnable.invoke(self._messages(requests[0].prompt))
            except Exception as e:
                if "logprob" not in str(e).lower():
                    raise EngineError(f"engine langchain ({self.provider} {self.model}): {_one_line(e)}") from None
                return self._fall_back(f"the provider refused logprobs ({_one_line(e)[:120]})")
            if not self._content_logprobs(first):
                return self._fall_back("the provider returned no logprobs")
            self.mode = "logprobs"
            msgs = [first] + (self._batch(runnable, [r.prompt for r in requests[1:]]) if len(requests) > 1 else [])
        else:
            msgs = self._batch(runnable, [r.prompt for r in requests])
        self._count(msgs)
        results = []
        for req, msg in zip(requests, msgs):
            content = self._content_logprobs(msg)
            if not content:
                raise EngineError(f"engine langchain ({self.provider} {self.model}): no logprobs in the response; use mode='sampling'")
            results.append(self._letters_from_positions(content, req.options))
        return results

    def _fall_back(self, why: str):
        self.mode = "sampling"
        self.fallback_reason = why
        return None

    @staticmethod
    def _content_logprobs(msg) -> list:
        lp = (getattr(msg, "response_metadata", None) or {}).get("logprobs")
        return (lp.get("content") or []) if isinstance(lp, dict) else []

    @staticmethod
    def _letters_from_positions(content: list, options: tuple[str, ...]) -> OptionResult:
        mass = [0.0] * len(options)
        reach = 1.0  # probability of having arrived at this position on the greedy path
        index = {o: i for i, o in enumerate(options)}
        for pos in content:
            seen = set()
            for alt in pos.get("top_logprobs") or []:
                tok = alt.get("token", "")
                if tok in seen:
                    continue
                seen.add(tok)
                i = index.get(_norm(tok))
                if i is not None:
                    mass[i] += reach * math.exp(alt["logprob"])
            greedy = pos.get("token", "")
            if _norm(greedy) != "" or greedy == "":
                break  # the answer position (or some other word): stop walking
            reach *= math.exp(pos.get("logprob", 0.0))  # greedy token was "(" or blank: go on
        probs, outside = renormalise(mass)
        return OptionResult(probs=probs, outside_mass=outside, method="logprobs")

    def _sample(self, prompts: list[str], ns: list[int]) -> list[list[str]]:
        """``ns[i]`` answers at temperature 1 to ``prompts[i]``."""
        kw = {"temperature": 1.0, "max_tokens": self.sample_tokens}
        if not self.n_per_call:
            flat = [i for i, n in enumerate(ns) for _ in range(n)]
            msgs = self._batch(self.chat.bind(**kw), [prompts[i] for i in flat])
            self._count(msgs)
            texts: list[list[str]] = [[] for _ in prompts]
            for i, m in zip(flat, msgs):
                texts[i].append(_message_text(m))
            return texts
        from concurrent.futures import ThreadPoolExecutor

        if self.seed:
            kw["seed"] = self._sample_seed  # reproducible samples where the provider honours seeds
            self._sample_seed += 1

        def one(i: int):
            res = self.chat.generate([self._messages(prompts[i])], n=ns[i], **kw)
            return [g.message for g in res.generations[0]]

        try:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                per_prompt = list(pool.map(one, range(len(prompts))))
        except Exception as e:
            raise EngineError(f"engine langchain ({self.provider} {self.model}): {_one_line(e)}") from None
        # usage is per call: count it once per prompt
        self._count([msgs[0] for msgs in per_prompt if msgs])
        return [[_message_text(m) for m in msgs] for msgs in per_prompt]

    def _by_sampling(self, requests: list[OptionRequest]) -> list[OptionResult]:
        counts = [[0] * len(r.options) for r in requests]
        asked = [0] * len(requests)
        todo = [(i, self.samples) for i in range(len(requests))]
        for _ in range(1 + self.resample_rounds):
            if not todo:
                break
            answers = self._sample([requests[i].prompt for i, _ in todo], [n for _, n in todo])
            missing: dict[int, int] = {}
            for (i, _), texts in zip(todo, answers):
                for text in texts:
                    asked[i] += 1
                    letter = parse_letter(text, requests[i].options)
                    if letter is None:
                        missing[i] = missing.get(i, 0) + 1
                    else:
                        counts[i][requests[i].options.index(letter)] += 1
            todo = list(missing.items())
        results = []
        for i, r in enumerate(requests):
            n_ok = sum(counts[i])
            if n_ok == 0:
                results.append(OptionResult([1.0 / len(r.options)] * len(r.options), 1.0, f"sampling:{self.samples}"))
                continue
            results.append(OptionResult([c / n_ok for c in counts[i]], 1.0 - n_ok / asked[i], f"sampling:{self.samples}"))
        return results

    # ------------------------------------------------------------ generate

    def generate(self, requests: list[GenerateRequest]) -> list[Generation]:
        if not requests:
            return []
        t0 = time.perf_counter()
        out: list[Generation | None] = [None] * len(requests)
        # One batch per distinct parameter set (bind() fixes the parameters).
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault((r.max_tokens, r.temperature, r.stop, r.seed if self.seed else None), []).append(i)
        try:
            for (max_tokens, temperature, stop, seed), idx in groups.items():
                kw = {"max_tokens": max_tokens, "temperature": temperature}
                if seed is not None:
                    kw["seed"] = seed
                runnable = self.chat.bind(**kw)
                msgs = self._batch(runnable, [requests[i].prompt for i in idx], **({"stop": list(stop)} if stop else {}))
                self._count(msgs)
                for i, m in zip(idx, msgs):
                    meta = getattr(m, "response_metadata", None) or {}
                    n = int((getattr(m, "usage_metadata", None) or {}).get("output_tokens", 0) or 0)
                    finish = "length" if meta.get("finish_reason") in ("length", "max_tokens") else "stop"
                    out[i] = Generation(text=_message_text(m), finish_reason=finish, n_tokens=n)
        finally:
            self.stats.seconds += time.perf_counter() - t0
            self.stats.record("generate", len(requests))
        return out  # type: ignore[return-value]
