"""Prompt texts of the consensus episode.

Kept short and plain for a 135M instruct model. Participant prompts are
``conditioning + task`` so engines can cache the conditioning (a persona
backstory or a representative's record) as a shared prefix; the mediator's
fixed instructions are its cacheable prefix.

Two layouts (``fmt``):

* free text (opinions, critiques, statements) defaults to ``"chatml"``: the
  task is wrapped in one ``<|im_start|>user ... <|im_start|>assistant`` turn
  (the template of SmolLM2/Qwen instruct models). Measured on SmolLM2-135M-
  Instruct: the plain layout ending in ``Opinion:`` often yields an immediate
  end-of-text (empty opinions), the chat turn yields first-person answers.
* multiple-choice questions always use the project's plain convention
  (``(A) ...`` lines, then ``Answer:``): there the option letters kept 51-53%
  of the next-token mass against 12-18% after a chat turn plus ``Answer:``.

A participant prompt only ever contains that participant's own texts (opinion,
critique) and the mediator's statements -- never another participant's words.
"""
from __future__ import annotations

from collections.abc import Sequence

from agents.llm.base import option_letters

FORMATS = ("chatml", "plain")

# Seven-point agreement scale of the Habermas Machine, worst to best.
LIKERT7 = (
    "Strongly disagree",
    "Disagree",
    "Somewhat disagree",
    "Neutral",
    "Somewhat agree",
    "Agree",
    "Strongly agree",
)

# Generation stops where the model starts a new turn or question block. Blank
# lines are not a stop: chat models often open with a header line ("Here is my
# critique:") and a blank line; clean_text keeps the first real paragraph.
STOP = ("<|im_end|>", "<|im_start|>", "\nQuestion:")

_USER = "<|im_start|>user\n"
_ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"


def participant_prefix(conditioning: str) -> str:
    c = conditioning.strip()
    return c + "\n\n" if c else ""


def text_prompt(prefix: str, task: str, cue: str, fmt: str = "chatml") -> tuple[str, int]:
    """(prompt, prefix_len) for free text: ``prefix`` is the cacheable part,
    ``task`` the instruction, ``cue`` the answer label used by the plain layout."""
    if fmt == "chatml":
        head = _USER + prefix
        return head + task + _ASSISTANT, len(head)
    if fmt == "plain":
        return prefix + task + f"\n{cue}:", len(prefix)
    raise ValueError(f"prompt format must be one of {FORMATS}, got {fmt!r}")


# ---------------------------------------------------------------- multiple choice
def choice_block(question: str, options: Sequence[str], instruction: str = "") -> str:
    """A multiple-choice question in the project convention: ``(A) ...`` lines,
    an "Answer with" line, and ``Answer:`` last (the engine reads the next letter)."""
    letters = option_letters(len(options))
    lines = [f"Question: {question}"]
    if instruction:
        lines.append(instruction)
    lines += [f"({l}) {o}" for l, o in zip(letters, options)]
    listed = ", ".join(f"({l})" for l in letters[:-1]) + f" or ({letters[-1]})" if len(letters) > 1 else f"({letters[0]})"
    lines.append(f"Answer with {listed}.")
    lines.append("Answer:")
    return "\n".join(lines)


def position_suffix(question: str, statement: str, scale: Sequence[str]) -> str:
    return choice_block(
        f'How much do you agree with the statement "{statement}"?',
        scale,
        f"(The debate question is: {question})",
    )


# Voices of a ranking prompt: the participant ranks for itself ("participant",
# second person, after its conditioning), or an assistant ranks for it from its
# words alone ("observer", the Habermas Machine's ranking model, third person).
VOICES = ("participant", "observer")

# The observer ranker's fixed prefix (cacheable; no persona, no record).
RANKER_HEADER = (
    "You are an assistant who predicts how a participant in a group discussion would judge statements, "
    "using only what that participant wrote.\n\n"
)


def agreement_head(
    question: str, opinion: str | None = None, critique: str | None = None, previous: str | None = None, voice: str = "participant"
) -> str:
    """What precedes the statement in an agreement question. It is the same for
    every statement one participant rates, so callers put it in the request's
    prefix (cached once per participant, only the statement part is new).
    Rankers in a revision round also see the statement under revision and
    their critique of it (as in the Habermas Machine's ranking prompt)."""
    head = f"The group discussed the question: {question}\n"
    own = "Your" if voice == "participant" else "The participant's"
    if opinion:
        head += f"{own} opinion was: {opinion}\n"
    if previous:
        head += f'The statement under revision was: "{previous}"\n'
    if critique:
        head += f"{own} critique of it: {critique}\n"
    return head


def agreement_tail(statement: str, scale: Sequence[str], voice: str = "participant") -> str:
    ask = "How much do you agree with the group statement?" if voice == "participant" else "How much would this participant agree with the group statement?"
    return f'The group statement is: "{statement}"\n' + choice_block(ask, scale)


def agreement_suffix(
    question: str, statement: str, scale: Sequence[str], opinion: str | None = None, critique: str | None = None
) -> str:
    """Agreement with a group statement. The payoff prompt passes no opinion so
    the payoff depends only on who judges and on the statement; ranking
    candidates passes the ranker's own opinion and latest critique."""
    return agreement_head(question, opinion, critique) + agreement_tail(statement, scale)


def choice_rank_suffix(
    question: str, opinion: str, statements: Sequence[str], critique: str | None = None, previous: str | None = None, voice: str = "participant"
) -> str:
    """One multiple-choice question over all candidates (the ``"choice"`` ranking)."""
    head = agreement_head(question, opinion, critique, previous, voice)
    ask = "Which group statement do you agree with most?" if voice == "participant" else "Which group statement would this participant agree with most?"
    return head + choice_block(ask, statements)


def cot_rank_task(
    question: str, opinion: str, statements: Sequence[str], previous: str | None = None, critique: str | None = None, voice: str = "participant"
) -> str:
    """The chain-of-thought ranking task (the ``"cot"`` ranking): reason step by
    step, then a strict arrow ranking between ``<sep>`` and ``</answer>``; the
    same template the Habermas Machine's ranking model answers (own wording).
    ``voice="observer"``: ranked for the participant from their words only
    (question, opinion, statement under revision, critique), as that model does."""
    letters = option_letters(len(statements))
    example = " > ".join(reversed(letters[: min(3, len(letters))]))
    if voice == "participant":
        who, own = "as the participant described here. Think step by step about your opinion", "your critique"
        labels = ("Your opinion", "Your critique of it")
        task = "Rank the statements below from the one you would agree with most to the one you would agree with least, " + who
    else:
        own = "their critique"
        labels = ("Participant's opinion", "Participant's critique of it")
        task = (
            "Rank the statements below in the order this participant would most likely agree with them, from most to least, "
            "based only on what they wrote. Think step by step about their opinion"
        )
    task += (
        (f" and {own} of the statement under revision" if previous else "")
        + ", then give the ranking in arrow notation: letters joined by '>' (\"preferred to\"), every letter once, no ties.\n"
        f"Answer in this format:\n<answer>\n[your reasoning]\n<sep>\n[ranking, e.g. {example}]\n</answer>\n\n"
        f"Question: {question}\n{labels[0]}: {opinion}\n"
    )
    if previous:
        task += f'Statement under revision: "{previous}"\n{labels[1]}: {critique or ""}\n'
    task += "Statements to rank:\n" + "".join(f"{l}. {s}\n" for l, s in zip(letters, statements))
    return task


# ---------------------------------------------------------------- participants
def opinion_prompt(conditioning: str, question: str, fmt: str = "chatml") -> tuple[str, int]:
    task = f"Question: {question}\nWrite your own opinion on this question in two or three sentences, in the first person."
    return text_prompt(participant_prefix(conditioning), task, "Opinion", fmt)


def critique_prompt(
    conditioning: str, question: str, opinion: str, statement: str, previous_critique: str | None = None, fmt: str = "chatml"
) -> tuple[str, int]:
    task = f"Question: {question}\nYour opinion: {opinion}\n"
    if previous_critique:
        task += f"Your earlier critique: {previous_critique}\n"
    task += (
        f'A mediator wrote this draft group statement: "{statement}"\n'
        "Write a short critique of the draft in one or two sentences, in the first person: "
        "what you agree with and what should change."
    )
    return text_prompt(participant_prefix(conditioning), task, "Critique", fmt)


def position_after_suffix(
    question: str, statement: str, scale: Sequence[str], opinion: str, final_statement: str
) -> str:
    """The position question asked again after deliberation: the participant
    has seen the group's final statement (their own opinion recalled)."""
    head = (
        f"You took part in a group discussion of the question: {question}\n"
        f"Your opinion was: {opinion}\n"
        f'The group\'s final statement was: "{final_statement}"\n'
    )
    return head + position_suffix(question, statement, scale)


# ---------------------------------------------------------------- mediator
MEDIATOR_HEADER = (
    "You are a neutral mediator helping a group agree on a shared statement. "
    "The statement must respect every person's view and must not take a side "
    "that any of them rejects.\n\n"
)


def draft_prompt(question: str, opinions: Sequence[str], fmt: str = "chatml") -> tuple[str, int]:
    task = f"Question: {question}\n"
    task += "".join(f"Opinion of person {i + 1}: {o}\n" for i, o in enumerate(opinions))
    task += "Write one consensus statement of two or three sentences that the whole group could agree with."
    return text_prompt(MEDIATOR_HEADER, task, "Consensus statement", fmt)


def revision_prompt(question: str, opinions: Sequence[str], previous: str, critiques: Sequence[str], fmt: str = "chatml") -> tuple[str, int]:
    task = f"Question: {question}\n"
    task += "".join(f"Opinion of person {i + 1}: {o}\n" for i, o in enumerate(opinions))
    task += f'Draft statement: "{previous}"\n'
    task += "".join(f"Critique of person {i + 1}: {c}\n" for i, c in enumerate(critiques))
    task += "Revise the draft so that it answers the critiques. Write one consensus statement of two or three sentences."
    return text_prompt(MEDIATOR_HEADER, task, "Revised consensus statement", fmt)


def clean_text(text: str) -> str:
    """One paragraph: the first non-empty paragraph that is not a mere header
    (ending in ':'), whitespace collapsed, a repeated label and wrapping quotes dropped."""
    paragraphs = [" ".join(p.split()) for p in text.strip().split("\n\n")]
    paragraphs = [p for p in paragraphs if p]
    t = next((p for p in paragraphs if not p.endswith(":")), "")
    for label in ("Opinion:", "Critique:", "Consensus statement:", "Revised consensus statement:"):
        if t.startswith(label):
            t = t[len(label) :].strip()
    if len(t) >= 2 and t[0] == t[-1] == '"':
        t = t[1:-1].strip()
    return t
