"""Rule-based persona conditioning from a demographic profile (Santurkar et al.
2023; the Anthology and higher-order-binding papers' baselines).

* QA: the demographic questions with the person's answers.
* Bio: a first-person biography ("I am a Republican.").
* Portray: a second-person portrayal ("You are a Republican.").

A profile maps a canonical trait to the person's category label, e.g.
``{"age": "30-49", "gender": "Female", "party": "Republican"}``.
"""
from __future__ import annotations

# Question wording for QA (Pew ATP wording where one exists).
TRAIT_QUESTIONS = {
    "age": "What is your age?",
    "gender": "What is your gender?",
    "education": "What is the highest level of school you have completed or the highest degree you have received?",
    "income": "Last year, what was your total family income from all sources, before taxes?",
    "race": "Which of the following racial or ethnic groups do you identify with?",
    "religion": "What is your present religion, if any?",
    "region": "In which region of the country do you live?",
    "party": "In politics today, do you consider yourself a Republican, Democrat, or Independent?",
    "ideology": "In general, would you describe your political views as...",
    "citizenship": "Are you a US citizen?",
}

# Sentence templates; {v} is the category label. Order is the order of the text.
_BIO = {
    "age": "I am {v}.",
    "gender": "My gender is {v}.",
    "race": "Racially, I identify as {v}.",
    "education": "The highest level of education I have completed is: {v}.",
    "income": "My annual household income is {v}.",
    "religion": "My present religion is {v}.",
    "region": "I live in the {v}.",
    "party": "In politics today, I consider myself a {v}.",
    "ideology": "Politically, I would describe my views as {v}.",
}
_PORTRAY = {
    "age": "You are {v}.",
    "gender": "Your gender is {v}.",
    "race": "Racially, you identify as {v}.",
    "education": "The highest level of education you have completed is: {v}.",
    "income": "Your annual household income is {v}.",
    "religion": "Your present religion is {v}.",
    "region": "You live in the {v}.",
    "party": "In politics today, you consider yourself a {v}.",
    "ideology": "Politically, you would describe your views as {v}.",
}
ORDER = ["age", "gender", "race", "education", "income", "religion", "region", "party", "ideology"]

METHODS = ("qa", "bio", "portray")


def _items(profile: dict) -> list[tuple[str, str]]:
    known = [(t, profile[t]) for t in ORDER if profile.get(t) not in (None, "")]
    extra = [(t, v) for t, v in profile.items() if t not in ORDER and v not in (None, "")]
    return known + sorted(extra)


def _age(v: str) -> str:
    """'30-49' -> '30-49 years old'; '65+' -> '65 years old or older'."""
    return f"{v[:-1]} years old or older" if v.endswith("+") else f"{v} years old"


def qa(profile: dict) -> str:
    blocks = []
    for trait, value in _items(profile):
        question = TRAIT_QUESTIONS.get(trait, f"What is your {trait}?")
        blocks.append(f"Question: {question}\nAnswer: {value}\n")
    return "\n".join(blocks) + "\n"


def _sentences(profile: dict, templates: dict, fallback: str) -> list[str]:
    out = []
    for trait, value in _items(profile):
        v = _age(str(value)) if trait == "age" else str(value)
        out.append(templates.get(trait, fallback).format(v=v, t=trait))
    return out


def bio(profile: dict) -> str:
    return " ".join(_sentences(profile, _BIO, "My {t} is {v}.")) + "\n\n"


def portray(profile: dict) -> str:
    return (
        "Answer the following questions as if you were the person described below.\n"
        + " ".join(_sentences(profile, _PORTRAY, "Your {t} is {v}."))
        + "\n\n"
    )


def render(method: str, profile: dict) -> str:
    if method == "qa":
        return qa(profile)
    if method == "bio":
        return bio(profile)
    if method == "portray":
        return portray(profile)
    raise ValueError(f"unknown baseline method '{method}' (expected one of {', '.join(METHODS)})")
