"""Backstory generation: Anthology's single open prompt, the American Voices
Project interview (higher-order binding), and the LLM critic.

Everything goes through the (store-backed) engine in batches, with seeds
derived from the bank seed and the persona index, so a killed generation
started again re-issues the same requests and gets the finished ones from the
store: no LLM call is repeated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from agents.llm.base import Engine, GenerateRequest, Generation, OptionRequest
from core.seeds import derive_seed

from . import critic as consistency

ANTHOLOGY_PROMPT = (
    "Question: Tell me about yourself. How old are you? Where did you grow up? What events made you who you are? "
    "What matters to you and what do you enjoy?\nAnswer:"
)
# Named variants: "cued" is the public Anthology code's prompt (above); "plain" is the
# bare question the Anthology blog and the higher-order-binding talk show.
ANTHOLOGY_PROMPTS = {"cued": ANTHOLOGY_PROMPT, "plain": "Question: Tell me about yourself.\nAnswer:"}
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


# The talk's interviews average ~2,500 words (5x Anthology). The budget is split
# over the questions by these weights (the life story gets the most room) and
# converted to tokens at ~1.33 tokens per English word (Llama/SmolLM tokenizers).
INTERVIEW_WORDS = 2500
ANSWER_WEIGHTS = (5, 3, 2, 2, 1, 2, 2, 1, 1, 1)
TOKENS_PER_WORD = 1.33


def answer_words(conditioning: str) -> int:
    """Words the persona itself wrote: the text after each ``Answer:`` up to the
    next ``Question:`` (an interview's answers, an Anthology backstory's story),
    or every word of a text with no ``Answer:`` (rule-based personas). The
    interview's ``interview_words`` is a budget; this is what was realized."""
    if "Answer:" not in conditioning:
        return len(conditioning.split())
    return sum(len(part.split("Question:")[0].split()) for part in conditioning.split("Answer:")[1:])


def answer_budgets(words: int, n_questions: int, explicit: tuple[int, ...] | None = None) -> list[int]:
    """Per-answer token budgets for the first ``n_questions`` questions:
    ``explicit`` if given (the last value repeats), else ``words`` split by
    ``ANSWER_WEIGHTS`` over all ten questions (asking fewer keeps each share)."""
    if explicit:
        return [int(explicit[min(i, len(explicit) - 1)]) for i in range(n_questions)]
    total = sum(ANSWER_WEIGHTS)
    return [max(1, round(words * w / total * TOKENS_PER_WORD)) for w in ANSWER_WEIGHTS[:n_questions]]


@dataclass
class GenerationParams:
    max_tokens: int = 200  # Anthology backstory length
    temperature: float = 1.0
    citizenship_filter: bool = False
    max_attempts: int = 3  # per backstory (citizenship) or per interview answer (format checks)
    critic: bool = True  # the six per-answer format checks
    interview_questions: int = len(INTERVIEW_QUESTIONS)
    interview_words: int = INTERVIEW_WORDS  # whole-interview length budget (all ten questions)
    answer_tokens: tuple[int, ...] | None = None  # explicit per-answer budgets (override interview_words)
    consistency_rounds: int = 1  # consistency-critic rounds over the whole transcript (0 = off)
    consistency_threshold: float = 0.5
    consistency_max_flags: int = 3  # answers flagged per transcript and round, at most
    anthology_prompt: str = "cued"  # a key of ANTHOLOGY_PROMPTS

    def __post_init__(self):
        if self.anthology_prompt not in ANTHOLOGY_PROMPTS:
            raise ValueError(f"anthology_prompt must be one of {sorted(ANTHOLOGY_PROMPTS)}, got {self.anthology_prompt!r}")

    def budgets(self) -> list[int]:
        return answer_budgets(self.interview_words, self.interview_questions, self.answer_tokens)

    def critic_settings(self) -> consistency.CriticSettings:
        return consistency.CriticSettings(rounds=self.consistency_rounds, threshold=self.consistency_threshold, max_flags=self.consistency_max_flags)


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
    profile: dict | None = None  # the respondent it is written for (Anthology DP)
    lengths: list = field(default_factory=list)  # generated tokens per interview answer


def _generations(engine: Engine, prompts: list[tuple[str, int]], params: GenerationParams, prefix_lens=None, stop=(), budgets=None) -> list[Generation]:
    reqs = [
        GenerateRequest(
            prompt=p,
            max_tokens=(budgets[i] if budgets else params.max_tokens),
            temperature=params.temperature,
            seed=s,
            stop=tuple(stop),
            prefix_len=(prefix_lens[i] if prefix_lens else 0),
        )
        for i, (p, s) in enumerate(prompts)
    ]
    return engine.generate(reqs)


def _gen(engine: Engine, prompts: list[tuple[str, int]], params: GenerationParams, prefix_lens=None, stop=()) -> list[str]:
    return [g.text.strip() for g in _generations(engine, prompts, params, prefix_lens, stop)]


def dp_prompt(profile: dict, variant: str = "cued") -> str:
    """Anthology (DP): the backstory prompt carries the respondent's demographics
    (first-person, as the answer's opening), so the story is written for them."""
    from .baselines import bio

    return f"{ANTHOLOGY_PROMPTS[variant]} {bio(profile).strip()}"


def anthology(engine: Engine, drafts: list[Draft], params: GenerationParams) -> None:
    """Fill each draft with an Anthology backstory (citizenship-filtered if asked)."""
    pending = list(drafts)
    while pending:
        heads = [dp_prompt(d.profile, params.anthology_prompt) if d.profile is not None else ANTHOLOGY_PROMPTS[params.anthology_prompt] for d in pending]
        texts = _gen(engine, [(h, derive_seed(d.seed, "backstory", d.attempts)) for h, d in zip(heads, pending)], params)
        verdicts = [True] * len(pending)
        if params.citizenship_filter:
            answers = _gen(
                engine,
                [(h + " " + t + CITIZEN_QUESTION, derive_seed(d.seed, "citizen", d.attempts)) for h, d, t in zip(heads, pending, texts)],
                GenerationParams(max_tokens=8, temperature=params.temperature),
                stop=("\n",),
            )
            verdicts = ["yes" in a.lower() for a in answers]
        still = []
        for d, head, text, ok in zip(pending, heads, texts, verdicts):
            d.attempts += 1
            d.critic.append({"check": "citizenship", "attempt": d.attempts, "kept": bool(ok)} if params.citizenship_filter else {})
            if ok and text:
                d.conditioning = f"{head} {text}\n\n"
                d.prompts = {"backstory": head, "citizenship": CITIZEN_QUESTION.strip() if params.citizenship_filter else None}
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
    """Multi-turn interview: each answer is generated with the whole transcript
    so far in context (its prefix, reused by prefix-caching engines) and a token
    budget of its own (``params.budgets()``); the format checks resample answers
    they flag (bounded attempts, all recorded); then the consistency critic reads
    each whole transcript and has contradicting answers rewritten
    (``agents.critic``), its verdicts and revisions recorded with the persona.

    Every answer is its own seeded request, written to the store when its batch
    (one question, every persona of the chunk) returns, so a killed interview
    restarted re-issues the finished answers' requests and reads them back."""
    questions = INTERVIEW_QUESTIONS[: params.interview_questions]
    budgets = params.budgets()
    turns: dict[int, list[consistency.Turn]] = {d.idx: [] for d in drafts}
    for d in drafts:
        d.lengths = []
    for qi, question in enumerate(questions):
        pending = list(drafts)
        attempt = {d.idx: 0 for d in drafts}
        while pending:
            prompts, lens = [], []
            for d in pending:
                head = consistency.interview_text(turns[d.idx])
                prompts.append((head + f"Question: {question}\nAnswer:", derive_seed(d.seed, "interview", qi, attempt[d.idx])))
                lens.append(len(head))
            gens = _generations(engine, prompts, params, prefix_lens=lens, stop=("\nQuestion:",), budgets=[budgets[qi]] * len(pending))
            answers = [g.text.strip() for g in gens]
            verdicts = critic_verdicts(engine, [(question, a) for a in answers]) if params.critic else [None] * len(pending)
            still = []
            for d, ans, gen, verdict in zip(pending, answers, gens, verdicts):
                attempt[d.idx] += 1
                if verdict is not None:
                    d.critic.append({"question": qi, "attempt": attempt[d.idx], **verdict})
                flagged = bool(verdict and verdict["flagged"]) or not ans
                if flagged and attempt[d.idx] < params.max_attempts:
                    still.append(d)
                    continue
                turns[d.idx].append(consistency.Turn(question, ans))
                d.lengths.append(gen.n_tokens)
            pending = still
        if progress:
            progress(qi + 1)
    reviews = consistency.revise(
        engine, [turns[d.idx] for d in drafts], budgets, params.critic_settings(), [d.seed for d in drafts], temperature=params.temperature
    )
    for d, review in zip(drafts, reviews):
        if params.consistency_rounds > 0:
            d.critic.append(review.to_json())
        d.conditioning = consistency.interview_text(turns[d.idx])
        d.prompts = {"interview": questions, "answer_tokens": budgets, "answer_lengths": d.lengths}
        d.done = True
