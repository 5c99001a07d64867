"""The payoff model: a participant's agreement with a statement, as a scalar.

Jarrett et al. estimate payoffs (eq. 21) with a payoff model "that outputs a
scalar agreement score for each participant" instead of asking the humans
again. Here it is the base LLM plus a LoRA adapter trained with the
representatives' pipeline (:mod:`mechanisms.finetuned_representatives.training`)
on agreement ratings: the prompt holds the participant (their opinion on the
question, optionally their record from other questions), the question and the
statement; the target is the rating as one digit 1..7. The score is read from
the engine's option distribution over the digits,

    score = sum_k P(digit k | prompt) * k,   k = 1 (strongly disagree) .. 7 (strongly agree)

so it is continuous and exact (no sampling), and it works with any engine
that serves the adapter: in process (transformers + ``lora``) or a vLLM
server started with the adapter (``agents.llm.vllm_lora``), addressed by name.

Training data: Habermas-format ``ratings.agreement`` (one rating per
candidate) or the personas' self-ratings in a consensus run's
``episodes.jsonl`` (:mod:`mechanisms.finetuned_representatives.deliberations`).
Groups are held out whole, and the held-out groups are the representatives'
validation groups, so a discrepancy computed on them never scores statements
of groups the payoff model saw.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.llm.base import Engine, OptionRequest
from core.errors import PersonaeError
from mechanisms import prompts
from mechanisms.finetuned_representatives.deliberations import Deliberations, RatingExample
from mechanisms.finetuned_representatives.splits import Split
from mechanisms.finetuned_representatives.training import RECORD, TrainSettings, fit
from mechanisms.representatives import ParticipantRecord, conditioning

DIGITS = tuple("1234567")
SCALE = "1 (strongly disagree) to 7 (strongly agree)"


class PayoffModelError(PersonaeError, ValueError):
    """Bad payoff-model input or files: one line."""


@dataclass(frozen=True)
class PayoffItem:
    question: str
    statement: str
    participant: str  # who rates: see participant_text


def participant_text(opinion: str, record: ParticipantRecord | None = None, question: str = "", subset: str = "", max_items: int = 1) -> str:
    """The participant as the payoff model sees them: the conditioning from
    ``subset`` of their record on other questions, then their opinion on this one."""
    head = conditioning(record.without_question(question), subset, max_items) if record is not None and subset else ""
    return (head + "\n\n" if head else "") + f"Opinion of the participant about the question under debate: {opinion.strip()}"


def payoff_request(item: PayoffItem) -> OptionRequest:
    """The option request whose digit distribution is the payoff; the
    participant is the cacheable prefix (the same for every statement they rate)."""
    task = (
        f"Question under debate: {item.question}\n"
        f'Group statement: "{item.statement}"\n\n'
        f"How much does this participant agree with the group statement? Answer with one digit from {SCALE}."
    )
    # the chat turn of the episode's prompts; the digit is the assistant's first token
    prompt, plen = prompts.text_prompt(prompts.participant_prefix(item.participant), task, "Rating", "chatml")
    return OptionRequest(prefix=prompt[:plen], suffix=prompt[plen:], options=DIGITS)


def _check(items: Sequence[PayoffItem]) -> None:
    for n, it in enumerate(items):
        if not isinstance(it, PayoffItem):
            raise PayoffModelError(f"payoff model: item {n} is a {type(it).__name__} (expected a PayoffItem(question, statement, participant))")
        for name in ("question", "statement", "participant"):
            if not isinstance(getattr(it, name), str):
                raise PayoffModelError(f"payoff model: item {n}: field '{name}' is a {type(getattr(it, name)).__name__} (expected text)")


class PayoffModel:
    """Scores agreement through any engine serving the payoff adapter."""

    def __init__(self, engine: Engine, subset: str = "", max_items: int = 1, name: str = "payoff model"):
        self.engine, self.subset, self.max_items, self.name = engine, subset, max_items, name

    def participant(self, opinion: str, record: ParticipantRecord | None = None, question: str = "") -> str:
        """``PayoffItem.participant`` as at training time (same conditioning subset)."""
        return participant_text(opinion, record, question, self.subset, self.max_items)

    def distributions(self, items: Sequence[PayoffItem]) -> np.ndarray:
        """(n, 7) probabilities of the digits 1..7, renormalised over them."""
        _check(items)
        if not items:
            return np.zeros((0, len(DIGITS)))
        return np.array([r.probs for r in self.engine.option_probs([payoff_request(it) for it in items])], dtype=np.float64)

    def score(self, items: Sequence[PayoffItem]) -> np.ndarray:
        """Expected rating on 1..7 per item: sum_k p_k * k."""
        return self.distributions(items) @ np.arange(1, len(DIGITS) + 1, dtype=np.float64)

    def score_matrix(self, question: str, statements: Sequence[str], participants: Sequence[str]) -> np.ndarray:
        """(statements, participants) scores of every statement by every participant, one batch."""
        items = [PayoffItem(question, s, p) for s in statements for p in participants]
        return self.score(items).reshape(len(statements), len(participants))


def load_payoff_model(path: str | os.PathLike, engine=None, store=None) -> PayoffModel:
    """The trained payoff model in ``path`` (an adapter folder written by
    :func:`train_payoff_model`). ``engine``: an EngineConfig serving it (e.g. a
    vLLM endpoint with the adapter under a name); default the base model +
    adapter in process. With a ``store``, answers are cached (resume, replay)."""
    from agents.llm.factory import EngineConfig, cached_engine, shared_engine

    path = Path(path)
    record_file = path / RECORD
    if not (path / "adapter_config.json").exists() or not record_file.exists():
        raise PayoffModelError(f"{path}: no trained payoff model (expected adapter_config.json and {RECORD}; run 'python run.py represent payoff CONFIG')")
    try:
        record = json.loads(record_file.read_text())
        settings = TrainSettings.model_validate(record["settings"])
    except Exception as exc:  # a damaged record: json or pydantic errors alike
        raise PayoffModelError(f"{record_file}: not a payoff training record ({type(exc).__name__})") from None
    if record.get("kind") != "payoff":
        raise PayoffModelError(f"{record_file}: field 'kind' is {record.get('kind')!r} (expected 'payoff': this adapter writes critiques)")
    cfg = engine or EngineConfig(kind="transformers", model=settings.base_model, lora=str(path))
    eng = cached_engine(cfg, store) if store is not None else shared_engine(cfg)
    return PayoffModel(eng, settings.subset, settings.max_items, name=str(path))


# ------------------------------------------------------------------ training
def split_ratings(ratings: Sequence[RatingExample], split: Split) -> tuple[list[int], list[int]]:
    """(train, held-out) indices: held out = the ratings of the split's
    validation groups; train = ratings whose group, participant and question
    are all outside them (the representatives' leak-free rule)."""
    groups, people, questions = set(split.validation_groups), set(split.validation_participants), set(split.validation_questions)
    held = [i for i, r in enumerate(ratings) if r.group in groups]
    train = [i for i, r in enumerate(ratings) if r.group not in groups and r.participant not in people and r.question_id not in questions]
    return train, held


def rating_item(data: Deliberations, r: RatingExample, subset: str, max_items: int) -> PayoffItem:
    return PayoffItem(r.question, r.statement, participant_text(r.opinion, data.records.get(r.participant), r.question, subset, max_items))


def target(rating: float) -> str:
    """The training target: the rating as its nearest digit."""
    return DIGITS[int(np.clip(np.rint(rating), 1, 7)) - 1]


def train_payoff_model(data: Deliberations, split: Split, adapter: str | os.PathLike, settings: TrainSettings | None = None, progress: bool = True) -> dict:
    """Train (or resume) the payoff adapter on the ratings of the training
    groups; early stopping on the held-out groups' loss. Returns the record."""
    settings = settings or TrainSettings(subset="")
    if not data.ratings:
        raise PayoffModelError(f"{data.source}: no agreement ratings (expected a ratings.agreement column, or episodes with payoff.agreement)")
    train, held = split_ratings(data.ratings, split)
    if not train or not held:
        side = "training" if not train else "held-out"
        raise PayoffModelError(f"{data.source}: no {side} ratings after the group split ({len(data.ratings)} ratings); add groups or change split.validation")

    def pairs(idx):
        return [(payoff_request(rating_item(data, data.ratings[i], settings.subset, settings.max_items)).prompt, target(data.ratings[i].rating)) for i in idx]

    about = {
        "kind": "payoff",
        "data": {"source": data.source, "fingerprint": data.fingerprint(), "ratings": len(data.ratings)},
        "split": split.to_json(),
        "train_ratings": len(train),
        "heldout_ratings": len(held),
        "train_mean_rating": float(np.mean([data.ratings[i].rating for i in train])),
    }
    return fit(pairs(train), pairs(held), adapter, settings, about, progress)


# ------------------------------------------------------------------ evaluation
def mean_absolute_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """MAE = (1/n) sum_i |pred_i - truth_i| (1..7 scale)."""
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(truth, float))))


def pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    """r = cov(pred, truth) / (sd(pred) sd(truth)); NaN when either is constant."""
    p, t = np.asarray(pred, float), np.asarray(truth, float)
    if len(p) < 2 or np.std(p) == 0 or np.std(t) == 0:
        return float("nan")
    return float(np.corrcoef(p, t)[0, 1])


@dataclass
class PayoffEval:
    n: int
    mae: float  # the payoff model on the held-out ratings
    pearson: float
    baseline_mae: float  # constant baseline: the training groups' mean rating
    baseline: float
    scores: list[float]
    ratings: list[float]

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("scores", "ratings")}


def evaluate_payoff_model(model: PayoffModel, data: Deliberations, indices: Sequence[int], baseline: float) -> PayoffEval:
    """Score the ratings ``indices`` (held-out groups) and compare with the
    ratings and with the constant ``baseline`` (training mean rating)."""
    if not indices:
        raise PayoffModelError(f"{data.source}: no held-out ratings to evaluate the payoff model on")
    rs = [data.ratings[i] for i in indices]
    scores = model.score([rating_item(data, r, model.subset, model.max_items) for r in rs])
    truth = np.array([r.rating for r in rs])
    return PayoffEval(
        len(rs), mean_absolute_error(scores, truth), pearson(scores, truth),
        mean_absolute_error(np.full_like(truth, baseline), truth), float(baseline),
        scores.round(6).tolist(), truth.tolist(),
    )
