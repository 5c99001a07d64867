"""A request's result is bit-for-bit the same alone, in any batch, in any
order, beside other personas' requests, and on a fresh engine (empty prefix
cache): what makes a resumed run equal an uninterrupted one (issue 13).
Real embedded model; exact equality (np.array_equal), no tolerance."""
from __future__ import annotations

import random

import numpy as np
import pytest

from agents.llm.base import GenerateRequest, LoglikRequest
from agents.llm.cache import CachedEngine
from agents.questions import Question, answered_block, display_order, option_request

PERSONAS = [
    "Question: Tell me about yourself.\nAnswer: I am 54 years old and grew up in Oceanport, New Jersey. I coach Little League and love classic rock.\n\n",
    "Question: Tell me about yourself.\nAnswer: I am a retired nurse from Ohio who loves gardening and my grandchildren.\n\n",
    "Question: Tell me about yourself.\nAnswer: I am 23 and study physics in Austin, Texas.\n\n",
]
QUESTIONS = [
    Question.make("spend", "Are we spending too much, too little, or about the right amount on improving the nation's health?", ["Too little", "About right", "Too much"]),
    Question.make("gmo", "How likely is it that genetically modified foods will lead to health problems?", ["Very likely", "Fairly likely", "Not too likely", "Not at all likely"]),
    Question.make("arith", "What is two plus two?", ["Four", "Seven", "Nine"]),
]


def _table(results) -> list[np.ndarray]:
    """Each result as the float64 array the report is built from: probs, outside mass."""
    return [np.array(list(r.probs) + [r.outside_mass], dtype=np.float64) for r in results]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def fresh():
    """A second engine, loaded here: nothing in its prefix cache."""
    from agents.llm.transformers_engine import TransformersEngine

    return TransformersEngine.embedded()


def test_option_distributions_are_the_same_alone_in_any_batch_and_on_a_fresh_engine(engine, fresh):
    mine = [option_request(PERSONAS[0], q, display_order(len(q.options), False)) for q in QUESTIONS]
    mine.append(option_request(PERSONAS[0], QUESTIONS[1], display_order(4, True)))
    mine.append(option_request("", QUESTIONS[2], [0, 1, 2]))  # no prefix at all
    others = [option_request(p, q, display_order(len(q.options), False)) for p in PERSONAS[1:] for q in QUESTIONS]
    alone = _table([fresh.option_probs([r])[0] for r in mine])  # one at a time, from an empty cache

    assert _same(_table(engine.option_probs(mine)), alone)
    order = list(range(len(mine)))
    random.Random(7).shuffle(order)
    shuffled = _table(engine.option_probs([mine[i] for i in order]))
    assert _same([shuffled[order.index(i)] for i in range(len(mine))], alone)
    mixed = others[:3] + mine + others[3:]  # beside other personas' questions, other padding and packing
    assert _same(_table(engine.option_probs(mixed))[3 : 3 + len(mine)], alone)
    # The distributions are real ones (not all equal), so equality is not vacuous.
    assert len({tuple(a) for a in alone}) == len(alone)


def test_loglikelihoods_and_seeded_generations_are_the_same_alone_and_in_a_batch(engine, fresh):
    conts = ["Question: What", "I am happy.", "Question: zebra"]
    scored = [LoglikRequest(PERSONAS[0], c) for c in conts] + [LoglikRequest(PERSONAS[1], conts[0])]
    alone = [fresh.loglikelihood([r])[0] for r in scored]
    assert engine.loglikelihood(scored[::-1])[::-1] == alone
    prompt = "Question: What do you enjoy on weekends?\nAnswer:"
    gens = [
        GenerateRequest(p + prompt, max_tokens=8, temperature=t, seed=s, prefix_len=len(p))
        for p, t, s in ((PERSONAS[0], 0.0, 0), (PERSONAS[0], 1.0, 1), (PERSONAS[1], 0.7, 2))
    ]
    alone_texts = [fresh.generate([g])[0].text for g in gens]
    assert [g.text for g in engine.generate(gens[::-1])][::-1] == alone_texts
    assert len(set(alone_texts)) > 1


def test_a_survey_step_resumed_after_a_kill_equals_one_computed_at_once(engine, fresh, store):
    """Two question steps asked in series (each answer extends the next prompt)
    of three personas, through the response store as a run does. Uninterrupted:
    each step in one batch. Interrupted: the kill lands inside step 1 after one
    of its requests was stored; the restart (empty prefix cache) computes the
    rest, then step 2. Every stored figure must be identical."""
    people = PERSONAS

    def survey(eng, split: bool) -> list[np.ndarray]:
        fp = {"kind": "transformers", "model": f"invariance-{split}"}
        run = CachedEngine(store, fp, lambda: eng)
        histories, out = [""] * len(people), []
        for step, q in enumerate(QUESTIONS[:2]):
            order = display_order(len(q.options), False)
            reqs = [option_request(p + h, q, order) for p, h in zip(people, histories)]
            if split and step == 0:
                run.option_probs(reqs[:1])  # stored, then the kill
                eng._prefixes.clear()
                run = CachedEngine(store, fp, lambda: eng)  # the resumed run
            results = run.option_probs(reqs)
            out += _table(results)
            histories = [h + answered_block(q, order, int(np.argmax(r.probs))) for h, r in zip(histories, results)]
        return out

    assert _same(survey(fresh, split=True), survey(engine, split=False))
