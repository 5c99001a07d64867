"""Backstory generation: Anthology's single open prompt, the American Voices
Project interview (higher-order binding), and the LLM critic.

Everything goes through the (store-backed) engine in batches, with seeds
derived from the bank seed and the persona index, so a killed generation
started again re-issues the same requests and gets the finished ones from the
store: no LLM call is repeated.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

from agents.llm.base import Engine, GenerateRequest, OptionRequest

ANTHOLOGY_PROMPT = (
    "Question: Tell me about yourself. How old are you? Where did you grow up? What events made you who you are? "
    "What matters to you and what do you enjoy?\nAnswer:"
)
CITIZEN_QUESTION = "\n\nQuestion: Are you a US citizen?\nAnswer:"

# American Voices Project (2021) life-history questions, as listed in the
# higher-order-binding talk (seeds/000).
INTERVIEW_QUESTIONS = [
    "To start, I would like to begin with a big question: tell me the story of your life. Start from the beginning"
    "\u2014from your childhood, to education, to family and relationships, and to any major life events you may have had.",
    "Some people tell us that they\u2019ve reached a crossroads at some points in their life where multiple paths were "
    "available, and their choice then made a significant difference in defining who they are. What about you? Was "
    "there a moment like that for you, and if so, could you tell me the whole story about that from start to finish?",
    "Tell me about anyone else in your life we haven\u2019t discussed (like friends or romantic partners). Are there "
    "people outside of your family who are important to you?",
    "Now let\u2019s talk about your current neighborhood. Tell me all about the neighborhood and area in which you are "
    "living now.",
    "Tell me about any recent changes to your daily routine.",
    "How would you describe your political views?",
    "How have you been thinking about race in the U.S. recently?",
    "For you, what makes it easy or hard to stay healthy?",
    "Some people are excited about medical vaccination, and others, not so much. How about you?",
    "Some people say they struggle with depression, anxiety, or something else like that. How about for you?",
]

# The six critic checks; a "yes" to any means the answer is resampled.
CRITIC_CHECKS = {
    "third_person_commentary": "Does the answer contain commentary written in the third person about the speaker?",
    "code": "Does the answer contain computer code?",
    "metadata": "Does the answer contain metadata, editor notes or formatting instructions?",
    "new_question": "Does the answer ask the interviewer a new question instead of answering?",
    "irrelevant": "Is the answer irrelevant to the question, or nonsense?",
    "non_human": "Does the speaker talk as a non-human (an AI, a bot) or refer to themself in the third person?",
}


def derive_seed(*parts) -> int:
    """A stable 31-bit seed from any parts (bank seed, persona index, attempt...)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class GenerationParams:
    max_tokens: int = 200
    temperature: float = 1.0
    citizenship_filter: bool = False
    max_attempts: int = 3  # per backstory (citizenship) or per interview answer (critic)
    critic: bool = True
    interview_questions: int = len(INTERVIEW_QUESTIONS)


@dataclass
class Draft:
    """A persona being generated."""

    idx: int
    seed: int
    conditioning: str = ""
    prompts: dict = field(default_factory=dict)
    critic: list = field(default_factory=list)
    attempts: int = 0
    done: bool = False
    rejected: bool = False


def _gen(engine: Engine, prompts: list[tuple[str, int]], params: GenerationParams, prefix_lens=None, stop=()) -> list[str]:
    reqs = [
        GenerateRequest(
            prompt=p,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            seed=s,
            stop=tuple(stop),
            prefix_len=(prefix_lens[i] if prefix_lens else 0),
        )
        for i, (p, s) in enumerate(prompts)
    ]
    return [g.text.strip() for g in engine.generate(reqs)]


def anthology(engine: Engine, drafts: list[Draft], params: GenerationParams) -> None:
    """Fill each draft with an Anthology backstory (citizenship-filtered if asked)."""
    pending = list(drafts)
    while pending:
        texts = _gen(engine, [(ANTHOLOGY_PROMPT, derive_seed(d.seed, "backstory", d.attempts)) for d in pending], params)
        verdicts = [True] * len(pending)
        if params.citizenship_filter:
            answers = _gen(
                engine,
                [(ANTHOLOGY_PROMPT + " " + t + CITIZEN_QUESTION, derive_seed(d.seed, "citizen", d.attempts)) for d, t in zip(pending, texts)],
                GenerationParams(max_tokens=8, temperature=params.temperature),
                stop=("\n",),
            )
            verdicts = ["yes" in a.lower() for a in answers]
        still = []
        for d, text, ok in zip(pending, texts, verdicts):
            d.attempts += 1
            d.critic.append({"check": "citizenship", "attempt": d.attempts, "kept": bool(ok)} if params.citizenship_filter else {})
            if ok and text:
                d.conditioning = f"{ANTHOLOGY_PROMPT} {text}\n\n"
                d.prompts = {"backstory": ANTHOLOGY_PROMPT, "citizenship": CITIZEN_QUESTION.strip() if params.citizenship_filter else None}
                d.done = True
            elif d.attempts >= params.max_attempts:
                d.rejected = True
            else:
                still.append(d)
        pending = still
    for d in drafts:
        d.critic = [c for c in d.critic if c]


def _critic_request(question: str, answer: str, check: str, yes_first: bool) -> OptionRequest:
    prefix = f"Here is one answer from an interview.\nQuestion: {question}\nAnswer: {answer}\n\n"
    first, second = ("Yes", "No") if yes_first else ("No", "Yes")
    suffix = f"Question: {CRITIC_CHECKS[check]}\n(A) {first}\n(B) {second}\nAnswer with (A) or (B).\nAnswer: ("
    return OptionRequest(prefix=prefix, suffix=suffix, options=("A", "B"))


def critic_verdicts(engine: Engine, pairs: list[tuple[str, str]]) -> list[dict]:
    """Six yes/no checks per (question, answer). P(yes) is read from the option
    distribution and averaged over both option orders (small models favour
    "(A)" whatever it says); the check says "yes" when P(yes) > 0.5."""
    reqs = [_critic_request(q, a, c, yf) for q, a in pairs for c in CRITIC_CHECKS for yf in (True, False)]
    res = engine.option_probs(reqs)
    out, k = [], 0
    for _ in pairs:
        v = {}
        for c in CRITIC_CHECKS:
            v[c] = round(float(res[k].probs[0] + res[k + 1].probs[1]) / 2, 6)
            k += 2
        out.append({"p_yes": v, "flagged": sorted(c for c, p in v.items() if p > 0.5)})
    return out


def interview(engine: Engine, drafts: list[Draft], params: GenerationParams, progress: Callable[[int], None] | None = None) -> None:
    """Multi-turn interview: each answer is conditioned on the transcript so far;
    the critic resamples answers it flags (bounded attempts, all recorded)."""
    transcripts = {d.idx: "" for d in drafts}
    questions = INTERVIEW_QUESTIONS[: params.interview_questions]
    for qi, question in enumerate(questions):
        pending = list(drafts)
        attempt = {d.idx: 0 for d in drafts}
        while pending:
            prompts, lens = [], []
            for d in pending:
                head = transcripts[d.idx]
                prompts.append((head + f"Question: {question}\nAnswer:", derive_seed(d.seed, "interview", qi, attempt[d.idx])))
                lens.append(len(head))
            answers = _gen(engine, prompts, params, prefix_lens=lens, stop=("\nQuestion:",))
            verdicts = critic_verdicts(engine, [(question, a) for a in answers]) if params.critic else [None] * len(pending)
            still = []
            for d, ans, verdict in zip(pending, answers, verdicts):
                attempt[d.idx] += 1
                if verdict is not None:
                    d.critic.append({"question": qi, "attempt": attempt[d.idx], **verdict})
                flagged = bool(verdict and verdict["flagged"]) or not ans
                if flagged and attempt[d.idx] < params.max_attempts:
                    still.append(d)
                    continue
                transcripts[d.idx] += f"Question: {question}\nAnswer: {ans}\n\n"
            pending = still
        if progress:
            progress(qi + 1)
    for d in drafts:
        d.conditioning = transcripts[d.idx]
        d.prompts = {"interview": questions}
        d.done = True
