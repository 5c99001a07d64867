"""Parsing a chain-of-thought ranking: ``<answer> reasoning <sep> B > A > C </answer>``.

The Habermas Machine asks each participant's ranking model to reason step by
step, then give a strict ranking of the lettered candidates in arrow notation
(``>`` only, no ties, every letter once) between ``<sep>`` and ``</answer>``.
Model outputs drift from that template, so the parser looks, in order, in

1. the part after ``<sep>`` (the closing ``</answer>`` may be missing: it is a
   stop sequence, so engines usually cut it off),
2. the text after a ``final ranking:`` label,
3. the whole text (the last arrow chain, where reasoning ends),

and takes the first arrow chain that is a complete strict ranking. Letters may
be wrapped (``(A)``, ``**A**``, ``Statement A``). A text without one gives
``order=None`` and a one-line ``reason`` (no chain, a tie, an unknown or
repeated letter, too few letters); the mediator then falls back to the
rating-based ranking for that participant and records the reason.

Hand-written because it is a small, format-specific grammar no library covers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from agents.llm.base import option_letters

# A chain of at least two letters joined by '>' or '=' (ties are parsed so they
# can be reported, then rejected).
_CHAIN = re.compile(r"(?<![A-Za-z])([A-Z](?:\s*[>=]\s*[A-Z])+)(?![A-Za-z])")
_WRAPPERS = re.compile(r"\*\*|__|[()\[\]`]|\b(?:Statement|statement|Candidate|candidate|Option|option)\s+(?=[A-Z]\b)")


@dataclass(frozen=True)
class ParsedRanking:
    order: tuple[int, ...] | None  # listed positions (0 = A), best first; None = no valid ranking
    reason: str = ""  # why not, when order is None
    where: str = ""  # "sep" | "final ranking" | "text": where the ranking was found


def _check(chain: str, k: int) -> tuple[tuple[int, ...] | None, str]:
    if "=" in chain:
        return None, f"ties are not allowed: '{chain}'"
    letters = [x.strip() for x in chain.split(">")]
    allowed = option_letters(k)
    for x in letters:
        if x not in allowed:
            return None, f"unknown letter {x} in '{chain}' (candidates {allowed[0]}-{allowed[-1]})"
    seen = set()
    for x in letters:
        if x in seen:
            return None, f"letter {x} repeated in '{chain}'"
        seen.add(x)
    if len(letters) != k:
        return None, f"ranks {len(letters)} of {k} candidates: '{chain}'"
    return tuple(allowed.index(x) for x in letters), ""


def parse_ranking(text: str, k: int) -> ParsedRanking:
    """The strict ranking of ``k`` lettered candidates in ``text`` (see module doc)."""
    if k == 1:
        return ParsedRanking((0,), "", "trivial")
    clean = _WRAPPERS.sub("", text or "")
    regions = []
    sep = re.search(r"<sep>(.*?)(?:</answer>|$)", clean, re.DOTALL)
    if sep:
        regions.append(("sep", sep.group(1), False))
    final = re.search(r"(?i)final ranking\s*(?:is)?\s*:?\s*(.*)", clean)
    if final:
        regions.append(("final ranking", final.group(1), False))
    regions.append(("text", clean, True))  # last chain: reasoning comes first
    first_problem = ""
    for where, region, last in regions:
        chains = [m.group(1) for m in _CHAIN.finditer(region)]
        for chain in reversed(chains) if last else chains:
            order, problem = _check(re.sub(r"\s+", "", chain), k)
            if order is not None:
                return ParsedRanking(order, "", where)
            first_problem = first_problem or problem
    return ParsedRanking(None, first_problem or "no arrow ranking (e.g. 'B > A > C') in the answer")
