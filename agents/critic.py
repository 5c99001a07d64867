"""The consistency critic (LLM-as-a-Critic, hypothesis H3 of the
higher-order-binding talk): it reads a persona's WHOLE interview transcript,
names each answer that contradicts another one (which answer, which other
answer, what contradicts what), and the contradicting answer is regenerated
with that critique in context; then the critic reads the revised transcript
again, up to ``rounds`` times.

Each verdict is read as option probabilities, not parsed from free text: for
every answer i the critic is asked "does Answer i contradict another answer?"
(Yes/No, averaged over both option orders because small models favour "(A)"
whatever it says), and for a flagged answer "which answer does it contradict?"
(one option per other answer). Only the explanation ("what contradicts what")
is free text. That keeps verdicts well formed whatever the model, and every
request shares the transcript as its prefix, so engines with a prefix cache
evaluate the transcript once per round.

The cheaper per-answer format checks (``backstories.CRITIC_CHECKS``) are a
separate step, run while the interview is generated.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.seeds import derive_seed

from .llm.base import Engine, GenerateRequest, OptionRequest, option_letters

# Every prompt the critic uses, in one place.
TRANSCRIPT_HEAD = (
    "Below is the full transcript of a life-history interview. One person gave every answer, "
    "so the answers must agree with each other about the facts of their life and their views.\n\n"
)
CHECK = (
    "Reviewer's question: Does Answer {i} contradict anything the person says in another answer "
    "(for example an age, a date, a family member, a place, a job or a political view that does not fit)?\n"
)
WHICH = "Reviewer's question: Which answer does Answer {i} contradict most clearly?\n"
EXPLAIN = "Reviewer's note: Answer {i} contradicts Answer {j}. What contradicts what:"
REVISE = (
    "(Interviewer's note: your first answer to the next question contradicted what you said in answer {j}: "
    "{why} Please answer it again so that it agrees with everything else you have said.)\n\n"
)


@dataclass(frozen=True)
class Turn:
    question: str
    answer: str


@dataclass(frozen=True)
class CriticSettings:
    rounds: int = 1  # critique-and-revise rounds (0 = critic off)
    threshold: float = 0.5  # P(yes) above which an answer is flagged
    max_flags: int = 3  # per transcript and round, the most probable first (bounds the cost of a weak critic)
    explanation_tokens: int = 32
    temperature: float = 0.7


@dataclass
class Inconsistency:
    answer: int  # 0-based index of the contradicting answer
    contradicts: int  # 0-based index of the answer it contradicts
    p_yes: float
    explanation: str


@dataclass
class Verdict:
    round: int
    p_yes: list[float]  # per answer: P(it contradicts another answer)
    inconsistencies: list[Inconsistency] = field(default_factory=list)


@dataclass
class Revision:
    round: int
    answer: int
    before: str
    after: str
    critique: str


@dataclass
class Review:
    """Everything the critic did to one transcript (stored with the persona)."""

    verdicts: list[Verdict] = field(default_factory=list)
    revisions: list[Revision] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.verdicts and self.verdicts[0].inconsistencies)

    @property
    def fixed(self) -> bool:
        """Flagged at first, and the last reading found nothing."""
        return self.flagged and not self.verdicts[-1].inconsistencies

    def to_json(self) -> dict:
        return {"check": "consistency", "flagged": self.flagged, "fixed": self.fixed, **asdict(self)}


def render_transcript(turns: list[Turn]) -> str:
    """Numbered, so the critic can name answers."""
    body = "".join(f"Question {k + 1}: {t.question}\nAnswer {k + 1}: {t.answer}\n\n" for k, t in enumerate(turns))
    return TRANSCRIPT_HEAD + body


def interview_text(turns: list[Turn]) -> str:
    """The transcript as the persona sees it (the conditioning text)."""
    return "".join(f"Question: {t.question}\nAnswer: {t.answer}\n\n" for t in turns)


def _yes_no(prefix: str, question: str, yes_first: bool) -> OptionRequest:
    first, second = ("Yes", "No") if yes_first else ("No", "Yes")
    return OptionRequest(prefix=prefix, suffix=f"{question}(A) {first}\n(B) {second}\nAnswer with (A) or (B).\nAnswer: (", options=("A", "B"))


def _which(prefix: str, i: int, others: list[int]) -> OptionRequest:
    labels = option_letters(len(others))
    lines = "".join(f"({lab}) Answer {j + 1}\n" for lab, j in zip(labels, others))
    return OptionRequest(prefix=prefix, suffix=WHICH.format(i=i + 1) + lines + "Answer: (", options=labels)


def judge(engine: Engine, transcripts: list[list[Turn]], settings: CriticSettings, seeds: list[int], round_: int) -> list[Verdict]:
    """One critic reading of each transcript (batched over transcripts)."""
    prefixes = [render_transcript(t) for t in transcripts]
    reqs = [_yes_no(pre, CHECK.format(i=i + 1), yf) for pre, t in zip(prefixes, transcripts) for i in range(len(t)) for yf in (True, False)]
    res = engine.option_probs(reqs)
    verdicts, k = [], 0
    for turns in transcripts:
        p = []
        for _ in turns:
            p.append(round(float(res[k].probs[0] + res[k + 1].probs[1]) / 2, 6))
            k += 2
        verdicts.append(Verdict(round_, p))
    # Which answer each flagged answer contradicts.
    flagged = []
    for v_i, v in enumerate(verdicts):
        above = sorted((i for i, p in enumerate(v.p_yes) if p > settings.threshold), key=lambda i: -v.p_yes[i])
        if len(transcripts[v_i]) > 1:
            flagged += [(v_i, i) for i in sorted(above[: settings.max_flags])]
    if not flagged:
        return verdicts
    others = {(v_i, i): [j for j in range(len(transcripts[v_i])) if j != i] for v_i, i in flagged}
    which = engine.option_probs([_which(prefixes[v_i], i, others[v_i, i]) for v_i, i in flagged])
    pairs = [(v_i, i, others[v_i, i][max(range(len(r.probs)), key=r.probs.__getitem__)]) for (v_i, i), r in zip(flagged, which)]
    why = engine.generate(
        [
            GenerateRequest(
                prompt=prefixes[v_i] + EXPLAIN.format(i=i + 1, j=j + 1),
                max_tokens=settings.explanation_tokens,
                temperature=settings.temperature,
                stop=("\n",),
                seed=derive_seed(seeds[v_i], "critic", round_, i),
                prefix_len=len(prefixes[v_i]),
            )
            for v_i, i, j in pairs
        ]
    )
    for (v_i, i, j), g in zip(pairs, why):
        verdicts[v_i].inconsistencies.append(Inconsistency(i, j, verdicts[v_i].p_yes[i], g.text.strip()))
    return verdicts


def revise(
    engine: Engine,
    transcripts: list[list[Turn]],
    budgets: list[int],
    settings: CriticSettings,
    seeds: list[int],
    *,
    temperature: float = 1.0,
    stop: tuple[str, ...] = ("\nQuestion:",),
) -> list[Review]:
    """Critique and revise each transcript in place, up to ``settings.rounds``
    times; return what the critic found and changed, per transcript."""
    reviews = [Review() for _ in transcripts]
    if settings.rounds <= 0:
        return reviews
    active = list(range(len(transcripts)))
    for round_ in range(settings.rounds + 1):
        verdicts = judge(engine, [transcripts[t] for t in active], settings, [seeds[t] for t in active], round_)
        for t, v in zip(active, verdicts):
            reviews[t].verdicts.append(v)
        active = [t for t, v in zip(active, verdicts) if v.inconsistencies]
        if not active or round_ == settings.rounds:
            break  # the last reading only checks whether the revisions fixed it
        jobs = [(t, a, inc) for t in active for a, inc in to_rewrite(reviews[t].verdicts[-1])]
        reqs = []
        for t, a, inc in jobs:
            turns = transcripts[t]
            head = interview_text(turns[:a])
            other = inc.contradicts if inc.answer == a else inc.answer
            note = REVISE.format(j=other + 1, why=inc.explanation or "(no details)")
            reqs.append(
                GenerateRequest(
                    prompt=head + note + f"Question: {turns[a].question}\nAnswer:",
                    max_tokens=budgets[a],
                    temperature=temperature,
                    stop=stop,
                    seed=derive_seed(seeds[t], "revision", round_, a),
                    prefix_len=len(head),
                )
            )
        for (t, a, inc), g in zip(jobs, engine.generate(reqs)):
            old = transcripts[t][a]
            new = g.text.strip() or old.answer
            transcripts[t][a] = Turn(old.question, new)
            reviews[t].revisions.append(Revision(round_, a, old.answer, new, inc.explanation))
    return reviews


def to_rewrite(verdict: Verdict) -> list[tuple[int, Inconsistency]]:
    """Which answer each inconsistency has rewritten: of the two answers named,
    the later one (the earlier one is then part of its context). An answer named
    in several inconsistencies is rewritten once, after the first critique."""
    out: dict[int, Inconsistency] = {}
    for inc in verdict.inconsistencies:
        out.setdefault(max(inc.answer, inc.contradicts), inc)
    return sorted(out.items())
