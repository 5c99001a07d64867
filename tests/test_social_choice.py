"""Schulze, Borda and plurality on published worked examples, hand-made cases
and properties (hypothesis); the chain-of-thought ranking parser on
published-style answers; the payoff-discrepancy and disagreement formulas."""
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechanisms.cot_ranking import parse_ranking
from mechanisms.payoff import disagreement
from mechanisms.representatives import bootstrap_gap, expected_payoff_gap
from mechanisms.social_choice import (
    aggregate,
    borda,
    pairwise_preferences,
    plurality,
    ranks_from_scores,
    schulze,
    strongest_paths,
)

pytestmark = pytest.mark.fast  # needs no model: part of `make check`


def ballots(groups):
    """[(count, "ACBED"), ...] -> rankings array, rank 1 = best, candidates A.. by index."""
    rows = []
    for count, order in groups:
        row = [0] * len(order)
        for position, letter in enumerate(order):
            row[ord(letter) - ord("A")] = position + 1
        rows += [row] * count
    return np.array(rows)


def letters(order):
    return "".join(chr(ord("A") + int(i)) for i in order)


# Wikipedia, "Schulze method", worked example: 45 voters, 5 candidates.
WIKIPEDIA = ballots(
    [(5, "ACBED"), (5, "ADECB"), (8, "BEDAC"), (3, "CABED"), (7, "CAEBD"), (2, "CBADE"), (7, "DCEBA"), (8, "EBADC")]
)


def test_wikipedia_example_winner_and_ranking():
    res = schulze(WIKIPEDIA)
    assert letters([res.winner]) == "E"
    assert letters(res.order) == "EACBD"
    assert not res.tied


def test_wikipedia_example_pairwise_and_paths():
    d = pairwise_preferences(WIKIPEDIA)
    # Published d[X, Y] table (rows A..E).
    assert d.tolist() == [
        [0, 20, 26, 30, 22],
        [25, 0, 16, 33, 18],
        [19, 29, 0, 17, 24],
        [15, 12, 28, 0, 14],
        [23, 27, 21, 31, 0],
    ]
    # Published strongest-path table.
    assert strongest_paths(d).tolist() == [
        [0, 28, 28, 30, 24],
        [25, 0, 28, 33, 24],
        [25, 29, 0, 29, 24],
        [25, 28, 28, 0, 24],
        [25, 28, 28, 31, 0],
    ]


def test_electowiki_example_30_voters():
    # electowiki.org "Schulze method", example 1: 30 voters, 4 candidates -> D > A > C > B.
    r = ballots(
        [(5, "ACBD"), (2, "ACDB"), (3, "ADCB"), (4, "BACD"), (3, "CBDA"), (3, "CDBA"), (1, "DACB"), (5, "DBAC"), (4, "DCBA")]
    )
    res = schulze(r)
    assert letters(res.order) == "DACB"
    assert res.ranks.tolist() == [2, 4, 3, 1]


def test_electowiki_example_with_ties_and_documented_tie_break():
    # electowiki example 2: 9 voters; B and D tie for first, A and C tie for third.
    r = ballots([(3, "ABCD"), (2, "DABC"), (2, "DBCA"), (2, "CBDA")])
    res = schulze(r, tie_break="index")
    assert res.ranks.tolist() == [2, 1, 2, 1]
    assert set(res.winners.tolist()) == {1, 3}
    assert letters(res.order) == "BDAC"  # index tie-break: lower index first within each tie
    for tb in ("tbrc", "random"):
        orders = {letters(schulze(r, tie_break=tb, seed=s).order) for s in range(40)}
        assert orders <= {"BDAC", "BDCA", "DBAC", "DBCA"}  # ties broken only inside tied groups
        assert len(orders) > 1  # the seed matters
        assert letters(schulze(r, tie_break=tb, seed=7).order) == letters(schulze(r, tie_break=tb, seed=7).order)


def test_random_tie_break_is_the_documented_permutation():
    r = np.array([[1, 2, 3], [3, 2, 1]])  # every pair is 1:1
    res = schulze(r, tie_break="random", seed=3)
    assert res.ranks.tolist() == [1, 1, 1]  # every pair tied 1:1
    assert res.order.tolist() == np.random.default_rng(3).permutation(3).tolist()


def test_tbrc_uses_ballots_before_random():
    # A and B tie pairwise (1:1) but one ballot ranks A above B, the other B above A:
    # TBRC takes the first ballot of a seeded shuffle, so the order is one ballot's.
    r = np.array([[1, 2], [2, 1]])
    for seed in range(10):
        shuffled = r[np.random.default_rng(seed).permutation(2)]
        expected = np.argsort(shuffled[0], kind="stable").tolist()
        assert schulze(r, tie_break="tbrc", seed=seed).order.tolist() == expected


def test_borda_hand_made():
    r = np.array([[1, 2, 3], [1, 3, 2], [2, 1, 3]])
    res = borda(r)
    assert res.scores.tolist() == [5, 3, 1]
    assert res.winner == 0 and res.order.tolist() == [0, 1, 2]
    # A tie within a ballot shares the points: [1, 1, 2] gives A and B 1.5 each.
    assert borda(np.array([[1, 1, 2]])).scores.tolist() == [1.5, 1.5, 0.0]


def test_plurality_hand_made():
    r = np.array([[1, 2, 3], [1, 3, 2], [2, 1, 3], [3, 2, 1], [2, 3, 1]])
    res = plurality(r, tie_break="index")
    assert res.scores.tolist() == [2, 1, 2]
    assert res.ranks.tolist() == [1, 2, 1]
    assert res.order.tolist() == [0, 2, 1]
    # A voter with two top choices splits the vote.
    assert plurality(np.array([[1, 1, 2]])).scores.tolist() == [0.5, 0.5, 0.0]


def test_plurality_can_differ_from_schulze():
    # Plurality picks C (most first places); E is the Condorcet-consistent Schulze winner.
    assert letters([plurality(WIKIPEDIA).winner]) == "C"
    assert letters([aggregate(WIKIPEDIA, "schulze").winner]) == "E"


def test_input_checks():
    with pytest.raises(ValueError):
        schulze(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError):
        schulze(np.array([1, 2]))
    with pytest.raises(ValueError):
        aggregate(np.array([[1, 2]]), method="approval")
    with pytest.raises(ValueError):
        schulze(np.array([[1, 2]]), tie_break="coin")


def test_ranks_from_scores():
    assert ranks_from_scores([[0.2, 0.9, 0.9, 0.1]]).tolist() == [[2, 1, 1, 3]]


# ------------------------------------------------------------------ properties
profiles = st.integers(2, 6).flatmap(
    lambda n: st.lists(st.lists(st.integers(1, n), min_size=n, max_size=n), min_size=1, max_size=12)
).map(np.array)


@settings(max_examples=300, deadline=None)
@given(profiles, st.sampled_from(["tbrc", "random", "index"]), st.integers(0, 1000))
def test_condorcet_winner_always_wins(r, tie_break, seed):
    d = pairwise_preferences(r)
    beats_all = [x for x in range(r.shape[1]) if all(d[x, y] > d[y, x] for y in range(r.shape[1]) if y != x)]
    res = schulze(r, tie_break=tie_break, seed=seed)
    if beats_all:
        assert res.winner == beats_all[0]
        assert res.winners.tolist() == beats_all


@settings(max_examples=200, deadline=None)
@given(profiles, st.integers(0, 1000))
def test_schulze_ranking_matches_beatpath_relation(r, seed):
    res = schulze(r, seed=seed)
    p = res.details["strongest_paths"]
    n = r.shape[1]
    beats = p > p.T
    assert not (beats & beats.T).any()
    # Transitive (Schulze 2011), and every beaten candidate ranks below its beater.
    for x in range(n):
        for y in range(n):
            if beats[x, y]:
                assert res.ranks[x] < res.ranks[y]
                assert all(beats[x, z] for z in range(n) if beats[y, z])
    # The winners are exactly the unbeaten candidates.
    assert res.winners.tolist() == [x for x in range(n) if not beats[:, x].any()]
    assert sorted(res.order.tolist()) == list(range(n))
    # The untied order refines the tied ranking.
    assert all(res.ranks[a] <= res.ranks[b] for a, b in zip(res.order, res.order[1:]))


@settings(max_examples=100, deadline=None)
@given(profiles, st.sampled_from(["schulze", "borda", "plurality"]))
def test_only_order_within_a_ballot_matters(r, method):
    # 0-based, 1-based or any increasing transform of the ranks gives the same result.
    a = aggregate(r, method, seed=1)
    b = aggregate(3 * r - 2 + 0.5, method, seed=1)
    assert a.order.tolist() == b.order.tolist() and a.ranks.tolist() == b.ranks.tolist()


# ------------------------------------------------------------------ chain-of-thought rankings
@dataclass(frozen=True)
class CotCase:
    name: str
    text: str
    k: int
    order: str | None  # expected best-first letters, None = no valid ranking
    reason: str = ""  # substring of the recorded reason when order is None


# The Habermas Machine's published answer template (<answer> reasoning <sep>
# ranking </answer>) and the drifts seen from models that only half follow it.
COT_CASES = [
    CotCase(
        "published template, five statements",
        "<answer>\n1. The participant's opinion emphasizes immediate action.\n\n"
        "3. - Statement A directly addresses the urgency ...\n   - Statement C downplays it.\n\n"
        "5. Based on this analysis, the ranking is: A > D > B > C > E\n\n<sep>\nA > D > B > C > E\n</answer>",
        5, "ADBCE",
    ),
    CotCase("closing tag cut by the stop sequence", "<answer>\nB fits best.\n<sep>\nB > A > C", 3, "BAC"),
    CotCase("sep part wins over a different chain in the reasoning", "<answer>At first A > B > C.\n<sep>\nC > B > A\n</answer>", 3, "CBA"),
    CotCase("'final ranking:' label instead of the template", "Reasoning here.\nFinal ranking: (B) > (C) > (A)", 3, "BCA"),
    CotCase("wrapped letters", "<answer>ok<sep>**Statement B** > **Statement A**</answer>", 2, "BA"),
    CotCase("no spaces", "<answer>x<sep>D>C>B>A</answer>", 4, "DCBA"),
    CotCase("last chain of free text", "I first thought A > B > C, but on reflection B > C > A", 3, "BCA"),
    CotCase("ties are not a strict ranking", "<answer>x<sep>A > B = C</answer>", 3, None, "ties are not allowed"),
    CotCase("a repeated letter", "<answer>x<sep>A > B > A</answer>", 3, None, "repeated"),
    CotCase("a letter beyond the candidates", "<answer>x<sep>A > B > D</answer>", 3, None, "unknown letter D"),
    CotCase("an incomplete ranking", "<answer>x<sep>B > A</answer>", 3, None, "ranks 2 of 3"),
    CotCase("no ranking at all", "I agree with the first statement the most.", 3, None, "no arrow ranking"),
    CotCase("empty answer", "", 2, None, "no arrow ranking"),
]


@pytest.mark.parametrize("case", COT_CASES, ids=lambda c: c.name)
def test_cot_ranking_parser(case):
    parsed = parse_ranking(case.text, case.k)
    if case.order is None:
        assert parsed.order is None and case.reason in parsed.reason, parsed
    else:
        assert parsed.order is not None, parsed.reason
        assert "".join(chr(ord("A") + i) for i in parsed.order) == case.order and parsed.reason == ""


# ------------------------------------------------------------------ payoff discrepancy, disagreement
def test_expected_payoff_gap_takes_the_expectation_before_the_difference():
    # Rollouts that scatter around the originals' payoffs: per-rollout gaps are
    # 1, the gap in *expected* payoff (eq. 21) is 0.
    orig = np.array([[4.0, 5.0], [4.0, 5.0]])
    sub = np.array([[3.0, 6.0], [5.0, 4.0]])
    assert expected_payoff_gap(sub, orig) == pytest.approx(0.0)
    assert expected_payoff_gap(orig + np.array([1.0, 3.0]), orig) == pytest.approx(2.0)


def test_bootstrap_interval_covers_the_gap_and_is_seeded():
    rng = np.random.default_rng(0)
    orig = rng.normal(4, 0.3, size=(30, 3))
    sub = orig + 0.5 + rng.normal(0, 0.3, size=(30, 3))
    gap = expected_payoff_gap(sub, orig)
    low, high = bootstrap_gap(sub, orig, seed=1)
    assert low < gap < high and 0.2 < low and high < 0.8
    assert (low, high) == bootstrap_gap(sub, orig, seed=1)
    assert all(np.isnan(bootstrap_gap(sub[:1], orig[:1], seed=1)))
    # Two rollouts: the resamples are {0,0}, {1,1} and {0,1}; the interval spans
    # exactly their statistics (each has mass >= 1/4).
    sub2 = np.array([[5.48, 2.17, 5.50], [5.49, 2.18, 5.51]])
    orig2 = np.array([[5.47, 2.20, 5.49], [5.51, 2.15, 5.52]])
    stats = [expected_payoff_gap(sub2[i], orig2[i]) for i in ([0, 0], [1, 1], [0, 1])]
    assert bootstrap_gap(sub2, orig2, seed=1) == pytest.approx((min(stats), max(stats)))


def test_disagreement_is_the_mean_pairwise_distance():
    assert disagreement([1.0, 4.0, 7.0]) == pytest.approx((3 + 6 + 3) / 3)
    assert disagreement([5.0, 5.0]) == 0.0 and disagreement([3.0]) == 0.0


# ------------------------------------------------------------------ input checks (issue 26)
def test_input_is_checked_as_the_habermas_machine_checks_it():
    from mechanisms.social_choice import SocialChoiceError

    # A row of -1 is a voter who did not rank (the Habermas Machine's mock ballot): left out.
    with_mock = schulze(np.array([[0, 1, 2], [-1, -1, -1], [0, 2, 1]]), seed=3)
    assert with_mock.order.tolist() == schulze(np.array([[0, 1, 2], [0, 2, 1]]), seed=3).order.tolist()
    bad = [
        (np.array([[0, -1, 1]]), r"rankings\[0\]: a partial ballot"),
        (np.array([[0, 1], [-2, 0]]), r"ranks must be >= 0"),
        ([[0, 1], [0]], r"all rows of the same length"),
        (np.array([[[0, 1]]]), r"expected shape \(voters, candidates\)"),
        (np.zeros((0, 3)), r"no voters"),
        (np.full((4, 3), -1), r"no voters"),  # the Habermas Machine returns a seed-dependent order here
    ]
    for rankings, message in bad:
        with pytest.raises(SocialChoiceError, match=message):
            schulze(rankings)
    for d, message in ((np.array([[1, 2], [0, 0]]), "diagonal must be 0"), (np.ones((2, 3)), "square")):
        with pytest.raises(SocialChoiceError, match=message):
            strongest_paths(d)


def test_tbrc_shuffles_ballots_as_the_habermas_machine_and_documents_the_difference():
    import mechanisms.social_choice as sc

    # The Habermas Machine shuffles a copy of the ballots with default_rng(seed).shuffle; the
    # first ballot separating a tie decides. Same seed, same ballot order here.
    r = np.array([[1, 2], [2, 1], [2, 1], [1, 2], [2, 1]])
    for seed in range(20):
        shuffled = r.copy()
        np.random.default_rng(seed).shuffle(shuffled)
        assert schulze(r[:4], seed=seed).order.tolist() == np.argsort(r[:4][np.random.default_rng(seed).permutation(4)][0], kind="stable").tolist()
        assert shuffled.tolist() == r[np.random.default_rng(seed).permutation(5)].tolist()
    doc = sc.__doc__
    assert "Habermas Machine" in doc and "the last, random step differs" in doc and "winners (rank 1 here, 0 there) are the same set" in doc
