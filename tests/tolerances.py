"""Numeric tolerances of the suite, derived from the arithmetic, not fitted to one CPU.

Like with like: the test server and the in-process vLLM engine compute in
float32 (vllm_fixtures.VLLM_TEST_DTYPE), as the transformers reference does. The
two then differ only in the order of float32 operations (other kernels,
batches, a cached prefix), and the bounds below follow from the arithmetic:

* float32's unit roundoff is u = 2**-24 ~ 6e-8; a dot product of length n
  summed in another order moves by at most n*u of its absolute terms
  (Higham, Accuracy and Stability, 3.1): n = 1536 (SmolLM2's widest, the MLP)
  gives ~1e-4 relative. We allow DELTA = 1e-3 nats on every log-probability,
  ten times that for the 30 layers the error goes through.
* Distributions: if every log-probability moves by at most DELTA before
  normalisation, each probability ratio q_i/p_i lies in [e^-2D, e^2D] after it
  (numerator and normaliser each move by e^+-D), so
  TV = sum_{q>p} (q_i - p_i) <= sum_i p_i (e^2D - 1) / 2 ... = (e^2D - 1)/2.
  Renormalising over the answer options is the same softmax: same bound.
* The HTTP engine sees only the server's top-20 tokens: a letter variant
  ("A", " A") outside them (each at most the 20th token's probability p20)
  is missing, removing mass E <= n_missing * p20 from the option mass S; a
  distribution renormalised after losing E of S moves by TV <= E/S.
* A continuation's log-likelihood sums one log-softmax per token, each off by
  <= 2*DELTA: |diff| <= 2*DELTA*k with k <= len(continuation) tokens.
  Per token (the NLL divided by the n tokens the tokenizer gives the text
  alone): |diff| <= 2*DELTA*k/n, k <= len(continuation) (``nll_per_token_bound``).
  A LoRA adapter adds dot products of length rank and hidden width, no longer
  than the base model's, so a served adapter stays within the same DELTA.

bfloat16 has u = 2**-8: n*u > 1, no useful bound exists, which is why the old
bf16-vs-float32 comparison needed a bound fitted on one CPU (it failed on the next).
"""
from __future__ import annotations

import math

import numpy as np

from agents.llm.base import letter_variants

DELTA = 1e-3
TV_ARITH = (np.exp(2 * DELTA) - 1) / 2


def tv(p, q) -> float:
    """Total variation distance: 0.5 * sum_i |p_i - q_i|."""
    return 0.5 * float(np.abs(np.asarray(p) - np.asarray(q)).sum())


def nll_per_token_bound(continuation: str, tokens: int) -> float:
    """Bound on |diff| of a per-token NLL between two float32 engines: the
    continuation's log-likelihood (k <= len(continuation) scored tokens, each
    off by <= 2*DELTA) divided by its ``tokens`` tokens."""
    return 2 * DELTA * len(continuation) / tokens


def sampled_tv_bound(k: int, categories: int, failure: float = 1e-6) -> float:
    """A TV distance an empirical distribution of ``k`` draws over ``categories``
    outcomes exceeds with probability at most ``failure``.

    Weissman et al. (2003): P(||p_hat - p||_1 >= e) <= (2^m - 2) exp(-k e^2 / 2),
    so with TV = L1 / 2: t = sqrt((m ln 2 + ln(1/failure)) / (2 k)).
    """
    return math.sqrt((categories * math.log(2) + math.log(1 / failure)) / (2 * k))


def truncated_mass(server, prompt: str, options) -> float:
    """E: an upper bound on the letter-variant probability the server's top-20 leaves out."""
    import openai

    client = openai.OpenAI(base_url=server.base_url, api_key="EMPTY", timeout=60)
    top = client.completions.create(model=server.name, prompt=prompt, max_tokens=1, temperature=0.0,
                                    logprobs=20).choices[0].logprobs.top_logprobs[0]
    client.close()
    missing = [v for o in options for v in letter_variants(o) if v not in top]
    return len(missing) * math.exp(min(top.values()))
