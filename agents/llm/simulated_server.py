"""A simulated OpenAI-compatible server, shaped like vLLM's: a *simulator* for
tests and benchmarks, not a model. Nothing it writes means anything.

It answers ``GET /v1/models``, ``POST /v1/completions`` (one prompt or a list,
``n`` samples per prompt, ``max_tokens`` including 0, ``logprobs``, ``echo``,
``stop``, ``seed``, ``temperature``) and ``POST /v1/chat/completions`` with JSON
shaped like vLLM's, so the real ``openai`` client (and langchain-openai) parse
it. ``GET /simulator/stats`` counts what it was asked; ``POST /simulator/reset``
zeroes the counts.

What it answers:

* **A multiple-choice prompt** -- option lines ``(A) text`` near the end, the
  answer position after them (``Answer: (``) -- gets a next-token distribution
  over the option letters, each split into the variants "A" and " A" as real
  tokenisers do, plus 1-8% of mass on tokens that are no option. The option
  probabilities are a **planted truth** when a rule matches (see
  :class:`TruthRule`: the question's text selects a rule, facts written in the
  persona's text set the weights) so a run has a known right answer; a yes/no
  question with no rule answers "No" with probability ``1 - yes_rate``; anything
  else gets a distribution derived from a hash of the prompt. With no option
  lines the distribution is over the letters A..Z. Sampled answers come out as
  "B)" after "(" and " (B)" otherwise, so sampled surveys parse.
* **A chain-of-thought ranking prompt** -- the Habermas Machine's template: it
  asks for a ranking between ``<sep>`` and ``</answer>``, the lettered items
  ("A. ...", "B. ...") after it -- gets, with probability ``rank_rate`` per
  prompt and seed, ``<answer>`` + a sentence or two + ``<sep>`` + a random
  strict ranking ("C > A > B") + ``</answer>``, as an instruction-tuned model
  mostly answers; otherwise pseudo-text that no parser reads as a ranking, so
  the client's retries and fallbacks run too (``rank_rate=0``: every ranking
  fails, the worst case).
* **Anything else** gets backstory-like pseudo-text (first-person sentences)
  of a length drawn per prompt and seed; at its natural end it either stops (EOS,
  ``eos_rate``) or runs on into "\\n\\nQuestion: ..." as base models do, so stop
  strings such as "\\nQuestion:" or "\\n" fire. ``finish_reason`` is "length" at
  ``max_tokens``, "stop" at EOS or a stop string.
* ``echo=True, max_tokens=0`` returns the prompt's own tokens with
  log-probabilities (the first one None) and ``text_offset``, as vLLM does.

Determinism: an answer is a function of the prompt, the request's seed (only
when temperature > 0) and the server's ``--seed``. ``n`` samples of one prompt
with seed s are the samples of seeds s, s+1, ..., s+n-1, as vLLM (V1) derives
its child requests' seeds, so one request with ``n`` equals n requests.

Tokenisation is crude, by design: a token is a run of whitespace followed by a
run of non-whitespace (" word," is one token). Token counts in ``usage`` and the
service-time model use it.

Service time (off by default: answers at once): each *sequence* (a prompt times
``n``) occupies one of ``max_batch`` slots for ``latency_s + prompt_tokens x
prompt_token_s + generated_tokens x token_s`` seconds; a request holds its
sequences' slots together (capped at ``max_batch``) for its slowest sequence's
time and waits in line (FIFO) when the slots are taken. That is a GPU server with
continuous batching seen from outside: decode steps of a batch run side by
side, a full batch queues.

Start it with ``python -m agents.llm.simulated_server --port P`` (``--port 0``
picks a free port and prints it) or from Python with :class:`SimulatedServer`,
which runs it in a subprocess on 127.0.0.1 (a context manager). Only 127.0.0.1
is ever bound.
"""
from __future__ import annotations

import argparse
import asyncio
import bisect
import functools
import hashlib
import itertools
import json
import math
import os
import random
import re
import select
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .base import EngineError

HOST = "127.0.0.1"  # never another interface: the simulator is a local test fixture


class SimulatorError(EngineError):
    """The simulator could not start, or a rule file is malformed (one line)."""


# ------------------------------------------------------------------ configuration


@dataclass(frozen=True)
class FactRule:
    """A fact in the persona's text and the option weights it implies.

    ``pattern`` is a regular expression searched in the text before the question
    (case-insensitive). With ``min``/``max`` its first group is read as a number
    and the fact holds only inside [min, max]. ``weights`` is a list (one weight
    per option position, A first) or a dict from option text (case-insensitive,
    exact) to weight; options a dict leaves out weigh 1."""

    pattern: str
    weights: tuple[float, ...] | dict[str, float]
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class TruthRule:
    """A planted truth for the questions whose text matches ``question`` (a
    regular expression searched, case-insensitive, in the question block: the
    paragraph holding the option lines). The first matching rule applies.

    The option weights start at ``weights`` (default: all 1) and each fact that
    holds multiplies them (``combine="product"``), or the first fact that holds
    replaces them (``combine="first"``). The option probabilities are the weights
    renormalised; ``outside`` is the mass put on tokens that are no option."""

    question: str
    weights: tuple[float, ...] | dict[str, float] | None = None
    facts: tuple[FactRule, ...] = ()
    combine: str = "product"
    outside: float = 0.02


@dataclass(frozen=True)
class ServiceTime:
    """A GPU server seen from outside (see the module docstring); all zero: instant."""

    latency_s: float = 0.0
    prompt_token_s: float = 0.0
    token_s: float = 0.0
    max_batch: int = 256

    @property
    def instant(self) -> bool:
        return self.latency_s <= 0 and self.prompt_token_s <= 0 and self.token_s <= 0


@dataclass(frozen=True)
class SimulatorConfig:
    model: str = "simulated"
    seed: int = 0
    rules: tuple[TruthRule, ...] = ()
    service: ServiceTime = field(default_factory=ServiceTime)
    yes_rate: float = 0.1  # P(Yes) of a yes/no question no rule covers (critic checks say "No")
    eos_rate: float = 0.5  # at its natural end a text stops (EOS) or runs on into "\n\nQuestion:"
    mean_tokens: int = 60  # mean natural length of a generated text, in tokens
    # "sentences": texts drawn from a few fixed sentences (readable; zlib packs them ~6x);
    # "prose": pseudo-words drawn by Zipf's law, which zlib packs ~2.4x, as English prose
    # (2.4-3x): for measuring what a store of real texts costs.
    text: str = "sentences"
    # P(a chain-of-thought ranking prompt is answered in its format): an assumption
    # standing for an instruction-tuned model; 0 = none parse (retries, then fallbacks).
    rank_rate: float = 0.9

    def to_json(self) -> dict:
        return asdict(self)


def _weights(v) -> tuple[float, ...] | dict[str, float] | None:
    if v is None:
        return None
    if isinstance(v, dict):
        return {str(k).strip().lower(): float(w) for k, w in v.items()}
    return tuple(float(w) for w in v)


def rules_from_obj(obj: Any, source: str = "rules") -> tuple[TruthRule, ...]:
    """Rules from parsed JSON/YAML: a list of rules, or ``{"rules": [...]}``."""
    if isinstance(obj, dict):
        obj = obj.get("rules", [])
    if not isinstance(obj, list):
        raise SimulatorError(f"{source}: expected a list of rules (or {{rules: [...]}})")
    out = []
    for i, r in enumerate(obj):
        if isinstance(r, TruthRule):
            out.append(r)
            continue
        try:
            facts = tuple(
                f if isinstance(f, FactRule) else FactRule(
                    pattern=str(f["pattern"]), weights=_weights(f["weights"]),
                    min=None if f.get("min") is None else float(f["min"]),
                    max=None if f.get("max") is None else float(f["max"]),
                )
                for f in r.get("facts", [])
            )
            rule = TruthRule(
                question=str(r["question"]), weights=_weights(r.get("weights")), facts=facts,
                combine=str(r.get("combine", "product")), outside=float(r.get("outside", 0.02)),
            )
            if rule.combine not in ("product", "first"):
                raise ValueError(f"combine must be 'product' or 'first', got {rule.combine!r}")
            re.compile(rule.question)
            for f in facts:
                re.compile(f.pattern)
        except (KeyError, TypeError, ValueError, AttributeError, re.error) as e:
            raise SimulatorError(f"{source}: rule {i}: {type(e).__name__}: {' '.join(str(e).split())}") from None
        out.append(rule)
    return tuple(out)


def load_rules(path: str | os.PathLike) -> tuple[TruthRule, ...]:
    """Rules from a JSON or YAML file (YAML when the name ends in .yaml/.yml)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise SimulatorError(f"simulator rules: cannot read {p} ({e.strerror})") from None
    if p.suffix in (".yaml", ".yml"):
        import yaml

        obj = yaml.safe_load(text)
    else:
        obj = json.loads(text)
    return rules_from_obj(obj, str(p))


def _rules_json(rules: tuple[TruthRule, ...]) -> list[dict]:
    def w(v):
        return v if v is None or isinstance(v, dict) else list(v)

    return [
        {"question": r.question, "weights": w(r.weights), "combine": r.combine, "outside": r.outside,
         "facts": [{"pattern": f.pattern, "weights": w(f.weights), "min": f.min, "max": f.max} for f in r.facts]}
        for r in rules
    ]


# ------------------------------------------------------------------ text material

LETTERS = tuple(chr(ord("A") + i) for i in range(26))
# Where mass outside the options goes (none of these reads as an option letter).
OUTSIDE_TOKENS = ("\n", " The", " I'm", " My", " It", " Well", "...", " Not")
OUTSIDE_TEXTS = {"\n": "\n", " The": " The answer depends.", " I'm": " I'm not sure.", " My": " My answer is complicated.",
                 " It": " It depends.", " Well": " Well, hard to say.", "...": "...", " Not": " Not sure."}
SENTENCES = (
    "I grew up in a small town near the river, where everybody knew everybody.",
    "My father worked at the mill for thirty years and my mother taught third grade.",
    "We went to church most Sundays, and I still do when I can.",
    "After high school I joined the Army and served two tours overseas.",
    "I met my wife at a friend's wedding, and we have been married for twenty-six years.",
    "These days I work as a nurse on the night shift at the county hospital.",
    "Money was always tight, so I learned early to fix things myself.",
    "I moved to the city for college and never really went back.",
    "My kids are grown now; my daughter lives in Denver and my son is still in school.",
    "I care most about my family, my health and having a job that pays the bills.",
    "Politics comes up at dinner more than it should, and we do not always agree.",
    "On weekends I like to fish, work in the garden or watch the game with my neighbors.",
    "I worry about prices going up faster than wages.",
    "My grandparents came here with nothing, and I think about that a lot.",
    "I have lived in the same house for eighteen years and I know every creak in it.",
    "Honestly, I think people are kinder than the news makes them look.",
)
RUN_ON = ("\n\n", "Question:", " What", " else", " would", " you", " like", " to", " share?")
_SENT_TOKENS = tuple(tuple(" " + w for w in s.split()) for s in SENTENCES)
TEXT_STYLES = ("sentences", "prose")
_SYLLABLES = ("ba be bi bo bu da de di do du fa fe fi fo fu ga ge gi go gu ha he hi ho hu ja ka ke ki ko ku la le "
              "li lo lu ma me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va "
              "ve vi vo wa we wi ya yo za ze zi zo an en in on ar er or st th ch sh ng").split()


@functools.lru_cache(maxsize=1)
def _prose_words() -> tuple[tuple[str, ...], list[float]]:
    """5,000 pseudo-words and their cumulative Zipf weights (rank^-1), fixed."""
    rng, words, seen = random.Random(0), [], set()
    while len(words) < 5000:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(min(1 + int(rng.expovariate(1 / 1.2)), 5)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return tuple(words), list(itertools.accumulate(1 / (i + 1) for i in range(len(words))))


def _prose_sentence(rng: random.Random) -> tuple[str, ...]:
    words, cum = _prose_words()
    picked = [words[bisect.bisect(cum, rng.random() * cum[-1])] for _ in range(rng.randint(6, 18))]
    picked[0], picked[-1] = picked[0].capitalize(), picked[-1] + "."
    return tuple(" " + w for w in picked)
_WORD_RE = re.compile(r"\s*\S+|\s+")
_OPTION_RE = re.compile(r"^\(([A-Z])\)[ \t]*([^\n]*)$", re.M)
TAIL_CHARS = 6000  # option lines are looked for in this many trailing characters
_RANKED_RE = re.compile(r"^([A-Z])\. ", re.M)  # "A. statement" after a ranking template's "<sep>"


def count_tokens(text: str) -> int:
    """The crude token count (whitespace-led words), cheaply: no token list built."""
    return len(text.split()) + (1 if text and text[-1].isspace() else 0)


def tokenize(text: str) -> list[str]:
    return _WORD_RE.findall(text)


@dataclass(frozen=True)
class Question:
    """A multiple-choice prompt as the simulator reads it."""

    letters: tuple[str, ...]
    texts: tuple[str, ...]  # the option texts, in letter order
    block: str  # the paragraph holding the options, to the end of the prompt
    persona: str  # everything before it
    open_paren: bool  # the prompt ends in "(": the next token is the bare letter


def read_question(prompt: str) -> Question | None:
    """The last run of option lines "(A) ...", "(B) ..." near the end, if the
    prompt ends at an answer position after them (only an "Answer ..." cue, the
    option list or blank text follows)."""
    start = max(0, len(prompt) - TAIL_CHARS)
    tail = prompt[start:]
    found = list(_OPTION_RE.finditer(tail))
    if not found:
        return None
    # the last consecutive run A, B, C ...
    run = [found[-1]]
    for m in reversed(found[:-1]):
        if ord(m.group(1)) == ord(run[0].group(1)) - 1 and tail.count("\n", m.end(), run[0].start()) <= 1:
            run.insert(0, m)
        else:
            break
    if run[0].group(1) != "A" or len(run) < 2:
        return None
    after = tail[run[-1].end():]
    if len(after) > 400 or (after.strip() and "answer" not in after.lower()):
        return None
    cut = tail.rfind("\n\n", 0, run[0].start())
    block_at = start + (cut + 2 if cut >= 0 else 0)
    return Question(
        letters=tuple(m.group(1) for m in run), texts=tuple(m.group(2).strip() for m in run),
        block=prompt[block_at:], persona=prompt[:block_at], open_paren=prompt.rstrip(" ").endswith("("),
    )


def read_ranking(prompt: str) -> int:
    """How many lettered items a chain-of-thought ranking prompt lists ("A. ...",
    "B. ...", after the template's ``<sep>``); 0 if it is no such prompt."""
    at = prompt.rfind("<sep>")
    if at < 0:
        return 0
    letters = [m.group(1) for m in _RANKED_RE.finditer(prompt, at)]
    k = 0
    while k < len(letters) and letters[k] == LETTERS[k]:
        k += 1
    return k if k >= 2 else 0


def _digest(*parts) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else str(p).encode())
        h.update(b"\x1f")
    return h.digest()


def _rng(digest: bytes, *more) -> random.Random:
    return random.Random(int.from_bytes(_digest(digest.hex(), *more), "little") if more else int.from_bytes(digest, "little"))


# ------------------------------------------------------------------ the simulator (pure functions)


class Simulator:
    """Answers as functions of the request (no I/O): the HTTP layer calls these."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self._rules = [(re.compile(r.question, re.I), r, [(re.compile(f.pattern, re.I), f) for f in r.facts]) for r in self.config.rules]
        self.reset()

    def reset(self) -> None:
        self.stats: dict[str, Any] = {
            "requests": 0, "by_path": {}, "prompts": 0, "completions": 0,
            "by_kind": {}, "prompt_tokens": 0, "generated_tokens": 0,
            "max_inflight_requests": 0, "max_inflight_sequences": 0, "queued_requests": 0,
        }

    def _count(self, kind: str, prompts: int, completions: int, prompt_tokens: int, generated: int) -> None:
        s = self.stats
        s["prompts"] += prompts
        s["completions"] += completions
        s["prompt_tokens"] += prompt_tokens
        s["generated_tokens"] += generated
        k = s["by_kind"].setdefault(kind, {"requests": 0, "prompts": 0, "completions": 0})
        k["requests"] += 1
        k["prompts"] += prompts
        k["completions"] += completions

    # -------------------------------------------------------------- distributions

    def truth(self, prompt: str) -> list[float] | None:
        """The planted option probabilities for ``prompt`` (renormalised over its
        options, A first), or None when no rule matches (or it is no question)."""
        q = read_question(prompt)
        if q is None:
            return None
        got = self._ruled(q)
        return None if got is None else got[0]

    def _ruled(self, q: Question) -> tuple[list[float], float] | None:
        for qre, rule, facts in self._rules:
            if not qre.search(q.block):
                continue
            w = self._resolve(rule.weights, q)
            for fre, fact in facts:
                m = fre.search(q.persona)
                if m is None:
                    continue
                if fact.min is not None or fact.max is not None:
                    try:
                        x = float(m.group(1))
                    except (IndexError, ValueError, TypeError):
                        continue
                    if (fact.min is not None and x < fact.min) or (fact.max is not None and x > fact.max):
                        continue
                fw = self._resolve(fact.weights, q)
                if rule.combine == "first":
                    w = fw
                    break
                w = [a * b for a, b in zip(w, fw)]
            total = sum(w)
            if total <= 0:
                w, total = [1.0] * len(w), float(len(w))
            return [x / total for x in w], min(max(rule.outside, 0.0), 0.99)
        return None

    @staticmethod
    def _resolve(weights, q: Question) -> list[float]:
        n = len(q.letters)
        if weights is None:
            return [1.0] * n
        if isinstance(weights, dict):
            return [float(weights.get(t.lower(), 1.0)) for t in q.texts]
        w = [float(x) for x in weights[:n]]
        return w + [1.0] * (n - len(w))

    def next_token(self, prompt: str, digest: bytes) -> tuple[list[tuple[str, float]], Question | None]:
        """The answer-position distribution: (token, probability) pairs sorted by
        probability (descending), and the question read from the prompt."""
        q = read_question(prompt)
        rng = _rng(digest, "dist")
        if q is not None:
            letters = q.letters
            ruled = self._ruled(q)
            if ruled is not None:
                probs, outside = ruled
            elif {t.lower() for t in q.texts} == {"yes", "no"} and len(q.texts) == 2:
                y = min(max(self.config.yes_rate + rng.uniform(-0.05, 0.05), 0.0), 1.0)
                probs = [y if t.lower() == "yes" else 1.0 - y for t in q.texts]
                outside = rng.uniform(0.01, 0.08)
            else:
                w = [rng.expovariate(1.0) for _ in letters]
                probs = [x / sum(w) for x in w]
                outside = rng.uniform(0.01, 0.08)
        else:  # no option lines: every letter, most mass on a few
            letters = LETTERS
            w = [rng.expovariate(1.0) ** 3 for _ in letters]
            probs = [x / sum(w) for x in w]
            outside = rng.uniform(0.01, 0.08)
        pairs = []
        for letter, p in zip(letters, probs):
            bare = rng.uniform(0.6, 0.95)  # the share of "A" over " A"
            pairs.append((letter, (1.0 - outside) * p * bare))
            pairs.append((" " + letter, (1.0 - outside) * p * (1.0 - bare)))
        w = [rng.random() + 0.05 for _ in OUTSIDE_TOKENS]
        pairs.extend((t, outside * x / sum(w)) for t, x in zip(OUTSIDE_TOKENS, w))
        pairs.sort(key=lambda tp: -tp[1])
        return pairs, q

    # -------------------------------------------------------------- one sequence

    @staticmethod
    def _sample(pairs: list[tuple[str, float]], temperature: float, rng: random.Random | None) -> int:
        if temperature <= 0 or rng is None:
            return 0  # pairs are sorted: greedy is the first
        ws = [p ** (1.0 / temperature) if p > 0 else 0.0 for _, p in pairs]
        return rng.choices(range(len(pairs)), weights=ws)[0]

    def sequence(self, prompt: str, digest: bytes, max_tokens: int, temperature: float, seed: int | None,
                 want_top: int | None) -> tuple[list[str], list[float], list[dict], bool]:
        """One completion: (tokens, their logprobs, top logprobs per token (empty
        unless ``want_top`` is set), ended by EOS)."""
        if max_tokens <= 0:
            return [], [], [], False
        rng = _rng(digest, "sample", seed if seed is not None else uuid.uuid4().hex) if temperature > 0 else None
        q = read_question(prompt)
        if q is None:  # plain text; asking for logprobs must not change it
            toks, eos = self._ranking_or_text(prompt, rng or _rng(digest, "greedy"), max_tokens)
            lps = [-1.0 - (zlib.crc32(t.encode()) % 1000) / 250.0 for t in toks]
            if want_top is None:
                return toks, lps, [], eos
            pairs, _ = self.next_token(prompt, digest)
            top = {t: math.log(p) for t, p in pairs[: max(want_top, 0)]}
            top[toks[0]] = lps[0]
            return toks, lps, [top] + [{t: lp} for t, lp in zip(toks[1:], lps[1:])], eos
        pairs, q = self.next_token(prompt, digest)
        i = self._sample(pairs, temperature, rng)
        first, p_first = pairs[i]
        # an answer: "B)" after "(", " (B)" otherwise, or a non-answer
        letter = first.strip()
        if letter in LETTERS:
            toks = [first, ")"] if q.open_paren else [" (" + letter, ")"]
        else:
            toks = tokenize(OUTSIDE_TEXTS.get(first, first))
        lps = [math.log(p_first)] + [-0.05] * (len(toks) - 1)
        eos = True
        tops: list[dict] = []
        if want_top is not None:
            top = {t: math.log(p) for t, p in pairs[: max(want_top, 0)]}
            top[first] = math.log(p_first)  # vLLM adds the sampled token (k+1 entries)
            tops = [top] + [{t: lp} for t, lp in zip(toks[1:], lps[1:])]
        if len(toks) > max_tokens:
            toks, lps, tops, eos = toks[:max_tokens], lps[:max_tokens], tops[:max_tokens], False
        return toks, lps, tops, eos

    def _sentence(self, rng: random.Random) -> tuple[str, ...]:
        if self.config.text == "prose":
            return _prose_sentence(rng)
        return _SENT_TOKENS[rng.randrange(len(_SENT_TOKENS))]

    def _ranking_or_text(self, prompt: str, rng: random.Random, max_tokens: int) -> tuple[list[str], bool]:
        k = read_ranking(prompt)
        if not k or rng.random() >= self.config.rank_rate:
            return self._text(rng, max_tokens)
        order = list(LETTERS[:k])
        rng.shuffle(order)
        reasoning = [t for _ in range(rng.randint(1, 2)) for t in self._sentence(rng)]
        toks = ["<answer>", "\n", *reasoning, "\n<sep>\n", " > ".join(order), "\n</answer>"]
        return (toks, True) if len(toks) <= max_tokens else (toks[:max_tokens], False)

    def _text(self, rng: random.Random, max_tokens: int) -> tuple[list[str], bool]:
        natural = max(1, int(rng.expovariate(1.0 / max(1, self.config.mean_tokens))))
        toks: list[str] = []
        while len(toks) < min(natural, max_tokens):
            toks.extend(self._sentence(rng))
        toks = toks[:natural]
        if len(toks) >= max_tokens:
            return toks[:max_tokens], False
        if rng.random() < self.config.eos_rate:
            return toks, True
        while len(toks) < max_tokens:  # runs on like a base model
            toks.extend(RUN_ON)
            toks.extend(self._sentence(rng))
        return toks[:max_tokens], False

    # -------------------------------------------------------------- endpoints

    def seconds(self, prompt_tokens: int, generated: int) -> float:
        """One sequence's service time (see the module docstring)."""
        s = self.config.service
        return s.latency_s + prompt_tokens * s.prompt_token_s + generated * s.token_s

    def completions(self, body: dict) -> tuple[int, dict, int, float]:
        """/v1/completions: (status, JSON, sequences, service seconds)."""
        err = self._check_model(body)
        if err:
            return err, self._error(err, body), 0, 0.0
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            return 400, self._error(400, body, "prompt must be a string or a list of strings"), 0, 0.0
        n = int(body.get("n") or 1)
        max_tokens = body.get("max_tokens")
        max_tokens = 16 if max_tokens is None else int(max_tokens)
        temperature = float(1.0 if body.get("temperature") is None else body["temperature"])
        seed = body.get("seed")
        logprobs = body.get("logprobs")
        echo = bool(body.get("echo"))
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        if n < 1 or max_tokens < 0 or (logprobs is not None and int(logprobs) < 0):
            return 400, self._error(400, body, "n must be >= 1, max_tokens >= 0, logprobs >= 0"), 0, 0.0
        choices = []
        p_tokens = g_tokens = 0
        slowest = 0.0
        timed = not self.config.service.instant
        for prompt in prompts:
            pt = count_tokens(prompt)
            p_tokens += pt
            digest = _digest(self.config.seed, prompt)
            for j in range(n):
                s = None if seed is None else int(seed) + j  # vLLM V1: child j of seed s has seed s + j
                toks, lps, tops, eos = self.sequence(prompt, digest, max_tokens, temperature, s,
                                                     None if logprobs is None else int(logprobs))
                text = "".join(toks)
                finish, stop_reason = ("stop" if eos else "length"), None
                cut = min(((text.find(x), x) for x in stop if x and x in text), default=None)
                if cut is not None:
                    at, stop_reason = cut
                    text, finish = text[:at], "stop"
                    k = 0  # tokens up to and including the one holding the stop string
                    pos = 0
                    for k, t in enumerate(toks, 1):
                        pos += len(t)
                        if pos > at:
                            break
                    toks, lps, tops = toks[:k], lps[:k], tops[:k]
                g_tokens += len(toks)
                if timed:
                    slowest = max(slowest, self.seconds(pt, len(toks)))
                lp_json = None
                if logprobs is not None:
                    lp_json = self._logprobs(prompt if echo else "", toks, lps, tops, int(logprobs), max_tokens == 0 and echo)
                choices.append({
                    "index": len(choices), "text": (prompt + text) if echo else text, "logprobs": lp_json,
                    "finish_reason": finish, "stop_reason": stop_reason, "prompt_logprobs": None,
                })
        kind = "loglikelihood" if echo else ("option_probs" if logprobs is not None and max_tokens <= 1 else "generate")
        self._count(kind, len(prompts), len(choices), p_tokens, g_tokens)
        return 200, {
            "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": body["model"], "choices": choices,
            "usage": {"prompt_tokens": p_tokens, "total_tokens": p_tokens + g_tokens, "completion_tokens": g_tokens,
                      "prompt_tokens_details": None},
            "system_fingerprint": None, "service_tier": None, "kv_transfer_params": None,
        }, len(prompts) * n, slowest

    def _logprobs(self, prompt: str, toks, lps, tops, k: int, echo_only: bool) -> dict:
        tokens: list[str] = []
        token_lps: list[float | None] = []
        top: list[dict | None] = []
        if prompt:
            ptoks = tokenize(prompt)
            prev = ""
            for i, t in enumerate(ptoks):
                tokens.append(t)
                if i == 0:
                    token_lps.append(None)
                    top.append(None)
                else:  # a deterministic stand-in for log P(token | previous token)
                    lp = -0.25 - (zlib.crc32((prev + "\x00" + t).encode()) % 4096) / 512.0
                    token_lps.append(lp)
                    top.append({t: lp})
                prev = t
        if not echo_only:
            tokens.extend(toks)
            token_lps.extend(lps)
            top.extend(tops)
        offsets, pos = [], 0
        for t in tokens:
            offsets.append(pos)
            pos += len(t)
        return {"text_offset": offsets, "token_logprobs": token_lps, "tokens": tokens, "top_logprobs": top}

    def chat(self, body: dict) -> tuple[int, dict, int, float]:
        """/v1/chat/completions: (status, JSON, sequences, service seconds)."""
        err = self._check_model(body)
        if err:
            return err, self._error(err, body), 0, 0.0
        msgs = body.get("messages") or []
        parts = []
        for m in msgs:
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, list):
                c = "".join(b.get("text", "") for b in c if isinstance(b, dict))
            parts.append(str(c or ""))
        prompt = "\n".join(parts)
        n = int(body.get("n") or 1)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        max_tokens = 256 if max_tokens is None else int(max_tokens)
        temperature = float(1.0 if body.get("temperature") is None else body["temperature"])
        seed = body.get("seed")
        want = int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        # A chat answer to a question opens with "(" then the letter, as chat models do.
        chat_prompt = prompt if prompt.rstrip().endswith("(") else prompt.rstrip() + "\nAnswer: ("
        digest = _digest(self.config.seed, "chat", prompt)
        is_question = read_question(chat_prompt) is not None
        choices = []
        g_tokens = longest = 0
        for j in range(n):
            s = None if seed is None else int(seed) + j
            if is_question:
                toks, lps, tops, eos = self.sequence(chat_prompt, digest, max(0, max_tokens - 1), temperature, s, want)
                toks, lps = ["("] + toks, [-0.02] + lps
                if want is not None:
                    tops = [{"(": -0.02, " ": -4.5}] + tops
                if not max_tokens:
                    toks, lps, tops = [], [], []
            else:
                toks, lps, tops, eos = self.sequence(prompt, digest, max_tokens, temperature, s, want)
            text = "".join(toks)
            finish = "stop" if eos else "length"
            cut = min(((text.find(x), x) for x in stop if x and x in text), default=None)
            if cut is not None:
                text, finish = text[: cut[0]], "stop"
            g_tokens += len(toks)
            longest = max(longest, len(toks))
            lp_json = None
            if want is not None:
                lp_json = {"content": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode()),
                     "top_logprobs": [{"token": a, "logprob": b, "bytes": list(a.encode())} for a, b in (top or {t: lp}).items()][: max(want, 1)]}
                    for t, lp, top in zip(toks, lps, tops or [None] * len(toks))
                ]}
            choices.append({
                "index": j, "message": {"role": "assistant", "content": text, "refusal": None, "tool_calls": [], "reasoning_content": None},
                "logprobs": lp_json, "finish_reason": finish, "stop_reason": None,
            })
        pt = count_tokens(prompt)
        self._count("chat", 1, len(choices), pt, g_tokens)
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "choices": choices,
            "usage": {"prompt_tokens": pt, "total_tokens": pt + g_tokens, "completion_tokens": g_tokens, "prompt_tokens_details": None},
            "prompt_logprobs": None,
        }, n, (0.0 if self.config.service.instant else self.seconds(pt, longest))

    def models(self) -> dict:
        return {"object": "list", "data": [{
            "id": self.config.model, "object": "model", "created": int(time.time()), "owned_by": "personae-simulator",
            "root": self.config.model, "parent": None, "max_model_len": 1 << 20,
        }]}

    def _check_model(self, body: dict) -> int:
        if not isinstance(body, dict):
            return 400
        return 0 if body.get("model") == self.config.model else 404

    def _error(self, status: int, body: Any, message: str | None = None) -> dict:
        if status == 404:
            model = body.get("model") if isinstance(body, dict) else None
            message = f"The model `{model}` does not exist."
            return {"error": {"message": message, "type": "NotFoundError", "param": "model", "code": 404}}
        return {"error": {"message": message or "bad request", "type": "BadRequestError", "param": None, "code": status}}


# ------------------------------------------------------------------ HTTP
# A hand-written HTTP/1.1 keep-alive server on asyncio's Protocol API: uvicorn and
# starlette are not direct dependencies of the project, and their per-request
# machinery (ASGI scopes, routing, middleware) would cost more than the simulated
# answers themselves; this one parses a request line, headers and a
# Content-Length body and writes one response, about 20 us a request.

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 411: "Length Required", 500: "Internal Server Error"}


class _Slots:
    """``max_batch`` sequence slots handed out first come, first served."""

    def __init__(self, n: int) -> None:
        self.size = max(1, n)
        self.free = self.size
        self.waiting: deque[tuple[int, asyncio.Future]] = deque()

    async def acquire(self, m: int) -> bool:
        """Take m slots; True when the request had to wait in line."""
        m = min(m, self.size)
        if not self.waiting and self.free >= m:
            self.free -= m
            return False
        fut = asyncio.get_running_loop().create_future()
        self.waiting.append((m, fut))
        await fut
        return True

    def release(self, m: int) -> None:
        self.free += min(m, self.size)
        while self.waiting and self.free >= self.waiting[0][0]:
            m2, fut = self.waiting.popleft()
            self.free -= m2
            if not fut.done():
                fut.set_result(None)


class _App:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.service = sim.config.service
        self.slots = _Slots(self.service.max_batch)
        self.inflight_requests = 0
        self.inflight_sequences = 0

    def handle(self, method: str, target: str, body: bytes) -> tuple[int, dict, float, int]:
        """(status, payload, service seconds, sequences)."""
        path = target.split("?", 1)[0].rstrip("/")
        st = self.sim.stats
        st["requests"] += 1
        st["by_path"][path] = st["by_path"].get(path, 0) + 1
        if method == "GET" and path == "/v1/models":
            return 200, self.sim.models(), 0.0, 0
        if method == "GET" and path in ("/health", "/simulator/health"):
            return 200, {"ok": True}, 0.0, 0
        if method == "GET" and path == "/simulator/stats":
            return 200, {**st, "config": self.sim.config.to_json()}, 0.0, 0
        if method == "POST" and path == "/simulator/reset":
            self.sim.reset()
            return 200, {"ok": True}, 0.0, 0
        if path in ("/v1/completions", "/v1/chat/completions"):
            if method != "POST":
                return 405, {"detail": "Method Not Allowed"}, 0.0, 0
            try:
                req = json.loads(body or b"{}")
            except ValueError as e:
                return 400, self.sim._error(400, None, f"invalid JSON: {e}"), 0.0, 0
            try:
                fn = self.sim.completions if path == "/v1/completions" else self.sim.chat
                status, payload, seqs, seconds = fn(req)
            except (TypeError, ValueError, AttributeError) as e:
                return 400, self.sim._error(400, None, f"{type(e).__name__}: {e}"), 0.0, 0
            return status, payload, seconds, seqs
        return 404, {"detail": "Not Found"}, 0.0, 0


class _HTTP(asyncio.Protocol):
    MAX_HEAD = 64 * 1024

    def __init__(self, app: _App) -> None:
        self.app = app
        self.buf = bytearray()
        self.busy = False  # a response is being served (service time): later requests wait
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def connection_lost(self, exc) -> None:
        self.transport = None

    def _drain(self) -> None:
        while self.transport is not None and not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > self.MAX_HEAD:
                    self._write(400, {"detail": "headers too large"}, False)
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            try:
                method, target, version = head[0].split(" ", 2)
            except ValueError:
                self._write(400, {"detail": "bad request line"}, False)
                return
            headers = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self._write(411, {"detail": "send a Content-Length"}, False)
                return
            size = int(headers.get("content-length") or 0)
            if len(self.buf) < end + 4 + size:
                return
            body = bytes(self.buf[end + 4 : end + 4 + size])
            del self.buf[: end + 4 + size]
            keep = headers.get("connection", "").lower() != "close" and version != "HTTP/1.0"
            try:
                status, payload, seconds, seqs = self.app.handle(method, target, body)
            except Exception as e:  # a simulator bug: answer 500 rather than hang the client
                status, payload, seconds, seqs = 500, {"error": {"message": f"{type(e).__name__}: {e}", "type": "InternalServerError", "code": 500}}, 0.0, 0
            if seconds > 0:
                self.busy = True
                asyncio.ensure_future(self._serve_later(status, payload, seconds, seqs, keep))
                return
            self._write(status, payload, keep)

    async def _serve_later(self, status, payload, seconds, seqs, keep) -> None:
        app = self.app
        st = app.sim.stats
        app.inflight_requests += 1
        st["max_inflight_requests"] = max(st["max_inflight_requests"], app.inflight_requests)
        try:
            if await app.slots.acquire(seqs):
                st["queued_requests"] += 1
            app.inflight_sequences += min(seqs, app.slots.size)
            st["max_inflight_sequences"] = max(st["max_inflight_sequences"], app.inflight_sequences)
            try:
                await asyncio.sleep(seconds)
            finally:
                app.inflight_sequences -= min(seqs, app.slots.size)
                app.slots.release(seqs)
        finally:
            app.inflight_requests -= 1
        self.busy = False
        if self.transport is not None:
            self._write(status, payload, keep)
            self._drain()

    def _write(self, status: int, payload: dict, keep: bool) -> None:
        if self.transport is None:
            return
        data = json.dumps(payload, separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n{'connection: keep-alive' if keep else 'connection: close'}\r\n\r\n"
        ).encode()
        self.transport.write(head + data)
        if not keep:
            self.transport.close()
            self.transport = None


async def serve(config: SimulatorConfig, port: int = 0, ready=None) -> None:
    """Serve on 127.0.0.1:port until cancelled; ``ready(port)`` is called once listening."""
    app = _App(Simulator(config))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _HTTP(app), HOST, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    if ready:
        ready(bound)
    async with server:
        await server.serve_forever()


# ------------------------------------------------------------------ the handle (a subprocess)


class SimulatedServer:
    """The simulator in a subprocess on a free 127.0.0.1 port.

    ``with SimulatedServer(rules=[...]) as srv: OpenAIEngine.from_server(srv)``;
    ``srv.stats()`` / ``srv.reset()`` read and zero its counts; ``srv.truth(p)`` is
    the planted distribution for a prompt (computed here, as the server does)."""

    def __init__(
        self,
        model: str = "simulated",
        *,
        seed: int = 0,
        rules: str | os.PathLike | list | tuple | None = None,
        service: ServiceTime | None = None,
        yes_rate: float = 0.1,
        eos_rate: float = 0.5,
        mean_tokens: int = 60,
        text: str = "sentences",
        rank_rate: float = 0.9,
        startup_timeout: float = 30.0,
    ) -> None:
        if rules is None:
            parsed: tuple[TruthRule, ...] = ()
        elif isinstance(rules, (str, os.PathLike)):
            parsed = load_rules(rules)
        else:
            parsed = rules_from_obj(list(rules))
        self.config = SimulatorConfig(model=model, seed=seed, rules=parsed, service=service or ServiceTime(),
                                      yes_rate=yes_rate, eos_rate=eos_rate, mean_tokens=mean_tokens, text=text, rank_rate=rank_rate)
        self.name = model
        self.startup_timeout = startup_timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._local = Simulator(self.config)
        self._tmp: tempfile.TemporaryDirectory | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def argv(self, rules_file: str | None) -> list[str]:
        c, s = self.config, self.config.service
        argv = [sys.executable, "-m", "agents.llm.simulated_server", "--port", "0", "--model", c.model, "--seed", str(c.seed),
                "--yes-rate", str(c.yes_rate), "--eos-rate", str(c.eos_rate), "--mean-tokens", str(c.mean_tokens), "--text", c.text,
                "--latency", str(s.latency_s), "--prompt-token-s", str(s.prompt_token_s), "--token-s", str(s.token_s),
                "--max-batch", str(s.max_batch), "--rank-rate", str(c.rank_rate)]
        return argv + (["--rules", rules_file] if rules_file else [])

    def start(self) -> "SimulatedServer":
        if self.proc is not None:
            return self
        self._tmp = tempfile.TemporaryDirectory(prefix="personae-sim-")
        rules_file = None
        if self.config.rules:
            rules_file = os.path.join(self._tmp.name, "rules.json")
            Path(rules_file).write_text(json.dumps(_rules_json(self.config.rules)))
        log = os.path.join(self._tmp.name, "stderr.txt")
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(self.argv(rules_file), stdout=subprocess.PIPE, stderr=err, cwd=root, env=env)
        deadline = time.monotonic() + self.startup_timeout
        line = b""
        while time.monotonic() < deadline and self.proc.poll() is None:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                line = self.proc.stdout.readline()
                break
        try:
            self.port = int(json.loads(line)["port"])
        except (ValueError, KeyError, TypeError):
            tail = Path(log).read_text(errors="replace").strip().splitlines()
            self.stop()
            raise SimulatorError(f"simulated server did not start ({tail[-1] if tail else 'no output'})") from None
        return self

    def _http(self, method: str, path: str) -> dict:
        import http.client

        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            conn.request(method, path, body=b"" if method == "POST" else None)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stats(self) -> dict:
        return self._http("GET", "/simulator/stats")

    def reset(self) -> None:
        self._http("POST", "/simulator/reset")

    def truth(self, prompt: str) -> list[float] | None:
        return self._local.truth(prompt)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            if proc.stdout:
                proc.stdout.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "SimulatedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
        except Exception:
            pass


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m agents.llm.simulated_server",
                                 description="A simulated OpenAI-compatible (vLLM-shaped) server on 127.0.0.1; not a model.")
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port (printed as JSON on the first line)")
    ap.add_argument("--model", default="simulated", help="the served model name")
    ap.add_argument("--seed", type=int, default=0, help="server seed: another seed, other answers")
    ap.add_argument("--rules", help="planted-truth rules, a JSON or YAML file")
    ap.add_argument("--yes-rate", type=float, default=0.1, help="P(Yes) of yes/no questions no rule covers")
    ap.add_argument("--eos-rate", type=float, default=0.5)
    ap.add_argument("--mean-tokens", type=int, default=60)
    ap.add_argument("--text", choices=TEXT_STYLES, default="sentences",
                    help="generated texts: a few fixed sentences, or Zipf-drawn pseudo-words (as compressible as prose)")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds per sequence (service-time model)")
    ap.add_argument("--prompt-token-s", type=float, default=0.0, help="seconds per prompt token")
    ap.add_argument("--token-s", type=float, default=0.0, help="seconds per generated token")
    ap.add_argument("--max-batch", type=int, default=256, help="sequences served at once")
    ap.add_argument("--rank-rate", type=float, default=0.9,
                    help="P(a chain-of-thought ranking prompt is answered in its format); 0: none is (the worst case)")
    a = ap.parse_args(argv)
    try:
        rules = load_rules(a.rules) if a.rules else ()
    except SimulatorError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    cfg = SimulatorConfig(model=a.model, seed=a.seed, rules=rules, yes_rate=a.yes_rate, eos_rate=a.eos_rate, mean_tokens=a.mean_tokens,
                          text=a.text, rank_rate=a.rank_rate, service=ServiceTime(a.latency, a.prompt_token_s, a.token_s, a.max_batch))

    def ready(port: int) -> None:
        print(json.dumps({"port": port, "base_url": f"http://{HOST}:{port}/v1", "model": a.model}), flush=True)

    try:
        asyncio.run(serve(cfg, a.port, ready))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
