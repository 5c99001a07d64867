"""Deliberation data for digital representatives: critique examples.

A fine-tuned digital representative learns the *critique step* of a
participant (Jarrett et al., "Language agents as digital representatives in
collective decision-making", §4): from the question under debate, the
participant's own opinion and the group's draft consensus statement (the
"base information"), plus any of D/O/C/P about that participant from *other*
questions, to the critique the participant actually wrote.

Two sources, one :class:`Deliberations`:

* the Habermas Machine dataset's parquet layout
  (``hm_all_candidate_comparisons.parquet``): one row per participant x round x
  iteration; ``iteration_index`` 0 holds the opinion, 1 the critique of the
  draft. D (demographics) comes from any ``demographics.<trait>`` columns the
  file holds (the public HM release has none, so D is refused there); P from a
  ``position`` column (expected agreement 1..7 with the affirming statement),
  or -- the public release's way -- from its position-statement ratings file
  (``hm_all_position_statement_ratings.parquet``, ``data.positions``): each
  participant's agreement with the question's affirming statement, or 8 minus
  their agreement with the negating one (:func:`position_ratings`). The draft is ``top_candidate.text`` of the critique row when present,
  else the Schulze winner of the round's first candidates
  (``candidates.text`` ranked by ``rankings.numerical_ranks``, 0 = best).
  Agreement ratings, when the file has ``ratings.agreement``: per row a list
  aligned with ``candidates.text`` (HM labels ``STRONGLY_DISAGREE`` ..
  ``STRONGLY_AGREE`` or numbers 1..7; null = not rated) -- the training data
  of the payoff model (:mod:`mechanisms.payoff_model`).
* Personae's consensus episode logs: JSONL of ``EpisodeResult.to_json()``
  (``episodes.jsonl`` in a consensus run folder), or a parquet written by
  :func:`write_parquet` (HM layout plus ``personae.conditioning``: the persona
  text that played the participant, needed to replay episodes for payoffs).

Every bad input raises :class:`DeliberationError` with one line naming the
file, the field and what was expected.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import PersonaeError
from mechanisms import prompts
from mechanisms.payoff import LIKERT7
from mechanisms.representatives import ParticipantRecord, conditioning, position_label, require_parts
from mechanisms.social_choice import schulze

# Columns a Habermas Machine comparisons file must have (the draft comes from
# top_candidate.text, or from candidates.text + rankings.numerical_ranks).
REQUIRED = ("launch_id", "worker_id", "iteration_index", "question.text", "own_opinion.text", "critique.text")
DRAFT_FROM_RANKS = ("candidates.text", "rankings.numerical_ranks")
# Rows that are not real participants' words in the HM release.
NOT_PARTICIPANT = {"MOCK", "DUMMY", "EXAMPLE"}
DEMOGRAPHICS = "demographics."  # column prefix of questionnaire answers (label after the dot)
LIKERT_NAMES = tuple(s.upper().replace(" ", "_") for s in LIKERT7)  # STRONGLY_DISAGREE ... STRONGLY_AGREE


class DeliberationError(PersonaeError, ValueError):
    """Bad deliberation data: one line, file + field + what was expected."""


@dataclass(frozen=True)
class CritiqueExample:
    participant: str
    episode: str  # one group debating one question (HM: launch_id/round)
    group: str  # the group (HM: launch_id), the unit of the leak-free split
    question_id: str
    question: str
    opinion: str
    draft: str
    critique: str
    round: int = 1  # critique round (1 = critique of the first draft)


@dataclass(frozen=True)
class RatingExample:
    """A participant's agreement rating of a statement (payoff model data)."""

    participant: str
    episode: str
    group: str  # the unit of the held-out split
    question_id: str
    question: str
    opinion: str  # the participant's own opinion on the question
    statement: str
    rating: float  # 1 (strongly disagree) .. 7 (strongly agree)


@dataclass
class Deliberations:
    examples: list[CritiqueExample]
    records: dict[str, ParticipantRecord]  # everything each participant said, for D/O/C/P
    source: str
    conditionings: dict[str, str] = field(default_factory=dict)  # persona texts (generated data only)
    ratings: list[RatingExample] = field(default_factory=list)  # agreement ratings, when the data hold them

    def prompt(self, ex: CritiqueExample, subset: str = "OC", max_items: int = 3, fmt: str = "chatml") -> tuple[str, int]:
        """The representative's critique prompt for ``ex``: the episode's own
        critique prompt (mechanisms.prompts), conditioned on the participant's
        record minus this question -- the same text at training and at serving."""
        rec = self.records.get(ex.participant, ParticipantRecord(ex.participant))
        cond = conditioning(rec.without_question(ex.question), subset, max_items)
        return prompts.critique_prompt(cond, ex.question, ex.opinion, ex.draft, None, fmt)

    def prompt_variants(self, ex: CritiqueExample, subset: str = "OC", max_items: int = 3, fmt: str = "chatml") -> list[str]:
        """The prompt, then shorter ones with the oldest past-question blocks
        left out one at a time (the last has no past question: the base
        information, plus D); training takes the first that fits."""
        rec = self.records.get(ex.participant, ParticipantRecord(ex.participant)).without_question(ex.question)
        return [prompts.critique_prompt(conditioning(rec, subset, max_items, skip), ex.question, ex.opinion, ex.draft, None, fmt)[0]
                for skip in range(max_items + 1)]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for ex in self.examples:
            h.update(json.dumps(ex.__dict__, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def require(self, subsets) -> None:
        """Stop with one line when a conditioning set asks for a part (D, O,
        C, P) no participant in the data has."""
        require_parts(list(self.records.values()), list(subsets), self.source)

    @property
    def participants(self) -> list[str]:
        return sorted({e.participant for e in self.examples})

    @property
    def questions(self) -> list[str]:
        return sorted({e.question_id for e in self.examples})


POSITIONS_FILE = "hm_all_position_statement_ratings.parquet"
STATEMENT_COLUMNS = ("candidates.text", "statement.text", "position_statement.text")


def position_ratings(df: pd.DataFrame, source: str) -> dict[tuple[str, str], float]:
    """P from the Habermas Machine's position-statement ratings: per (worker,
    question text), the mean over that worker's ratings of the question's
    position statements, each oriented to the affirming statement

        p = rating                  (the affirming statement)
        p = 8 - rating              (the negating statement)

    on 1..7. Ratings may be lists aligned with a list of statements (the
    comparisons layout) or one per row; a statement that is neither position
    statement is skipped. The layout is the release's as documented in the HM
    repository (worker_id, question.*, the rated statement, ratings.agreement);
    a missing column stops with one line."""
    stmt = next((c for c in STATEMENT_COLUMNS if c in df.columns), None)
    need = ["worker_id", "question.text", "question.affirming_statement", "question.negating_statement", "ratings.agreement"]
    missing = [c for c in need if c not in df.columns] + ([] if stmt else [" or ".join(STATEMENT_COLUMNS)])
    if missing:
        raise DeliberationError(f"{source}: missing column(s) {', '.join(missing)} (expected the Habermas Machine's position-statement ratings layout)")
    sums: dict[tuple[str, str], list[float]] = {}
    for _, r in df.iterrows():
        texts, rated = r[stmt], r["ratings.agreement"]
        if texts is None or rated is None or isinstance(texts, float) or isinstance(rated, float):
            continue
        texts = [texts] if isinstance(texts, str) else list(texts)
        rated = [rated] if isinstance(rated, str) or np.isscalar(rated) else list(rated)
        if len(texts) != len(rated):
            raise DeliberationError(f"{source}: worker {r['worker_id']}: ratings.agreement has {len(rated)} value(s) for {len(texts)} statements")
        aff, neg = str(r["question.affirming_statement"]).strip(), str(r["question.negating_statement"]).strip()
        for text, value in zip(texts, rated):
            v = likert_value(value, source)
            text = str(text).strip()
            if v is None or text not in (aff, neg):
                continue
            sums.setdefault((str(r["worker_id"]), str(r["question.text"])), []).append(v if text == aff else 8 - v)
    return {k: float(np.mean(v)) for k, v in sums.items()}


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DeliberationError(f"{path}: not a readable parquet file ({first})") from None


def add_positions(data: "Deliberations", path: str | Path) -> "Deliberations":
    """Add P to every participant's record from a position-statement ratings file."""
    path = Path(path)
    if not path.is_file():
        raise DeliberationError(f"{path}: file not found (expected the Habermas Machine's {POSITIONS_FILE})")
    df = _read_parquet(path)
    for (worker, question), p in sorted(position_ratings(df, str(path)).items()):
        rec = data.records.get(worker)
        if rec is not None and all(q != question for q, _ in rec.positions):
            rec.positions.append((question, position_label(p)))
    return data


def load(path: str | Path, positions: str | Path | None = None) -> Deliberations:
    """Load a parquet file (HM layout) or a JSONL of episode results; with
    ``positions``, P from the HM position-statement ratings file."""
    if positions:
        return add_positions(load(path), positions)
    path = Path(path)
    if not path.exists():
        raise DeliberationError(f"{path}: file not found (expected a Habermas Machine parquet file or an episodes .jsonl)")
    if path.suffix == ".jsonl":
        return from_episodes(_read_jsonl(path), source=str(path))
    if path.suffix != ".parquet":
        raise DeliberationError(f"{path}: unknown file type '{path.suffix}' (expected .parquet or .jsonl)")
    df = _read_parquet(path)
    return from_frame(df, source=str(path))


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DeliberationError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        for key in ("question", "participants", "opinions", "critiques", "statements"):
            if key not in rows[-1]:
                raise DeliberationError(f"{path}:{n}: field '{key}' missing (expected an EpisodeResult.to_json() record)")
    return rows


def _qid(text: str) -> str:
    return "q" + hashlib.sha1(text.encode()).hexdigest()[:10]


def from_frame(df: pd.DataFrame, source: str = "<frame>") -> Deliberations:
    missing = [c for c in REQUIRED if c not in df.columns]
    if "top_candidate.text" not in df.columns:
        missing += [c for c in DRAFT_FROM_RANKS if c not in df.columns]
    if missing:
        raise DeliberationError(
            f"{source}: missing column(s) {', '.join(missing)} (expected the Habermas Machine layout: "
            f"{', '.join(REQUIRED)}, and top_candidate.text or {' + '.join(DRAFT_FROM_RANKS)})"
        )
    df = df.copy()
    for col in ("own_opinion.metadata.provenance", "metadata.provenance"):
        if col in df.columns:
            df = df[~df[col].astype(str).isin(NOT_PARTICIPANT)]
    df["worker_id"] = df["worker_id"].astype(str)
    df["launch_id"] = df["launch_id"].astype(str)
    if "question.id" not in df.columns:
        df["question.id"] = df["question.text"].map(_qid)
    df["question.id"] = df["question.id"].astype(str)
    round_col = "round_id" if "round_id" in df.columns else "question.id"
    df["_episode"] = df["launch_id"] + "/" + df[round_col].astype(str)
    bad = ~df["iteration_index"].isin([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    if bad.any():
        raise DeliberationError(f"{source}: column iteration_index has {df.loc[bad, 'iteration_index'].iloc[0]!r} (expected 0 = opinion, 1.. = critique rounds)")

    opinions = df[df["iteration_index"] == 0]
    records: dict[str, ParticipantRecord] = {}
    conds: dict[str, str] = {}
    demo_cols = [c for c in df.columns if c.startswith(DEMOGRAPHICS)]
    for _, r in opinions.iterrows():
        rec = records.setdefault(r["worker_id"], ParticipantRecord(r["worker_id"]))
        for c in demo_cols:
            value = r[c]
            if isinstance(value, str) and value.strip() and c[len(DEMOGRAPHICS):] not in rec.demographics:
                rec.demographics[c[len(DEMOGRAPHICS):]] = value.strip()
        if isinstance(r["own_opinion.text"], str) and r["own_opinion.text"].strip():
            rec.opinions.append((r["question.text"], r["own_opinion.text"].strip()))
        if "position" in df.columns and pd.notna(r.get("position")):
            rec.positions.append((r["question.text"], position_label(float(r["position"]))))
        if "personae.conditioning" in df.columns and isinstance(r["personae.conditioning"], str):
            conds[r["worker_id"]] = r["personae.conditioning"]
    drafts = _drafts_from_ranks(opinions, source) if "top_candidate.text" not in df.columns else {}
    examples = []
    crit = df[(df["iteration_index"] >= 1) & df["critique.text"].map(lambda t: isinstance(t, str) and bool(t.strip()))]
    for _, r in crit.sort_values(["_episode", "iteration_index", "worker_id"], kind="stable").iterrows():
        draft = r["top_candidate.text"] if "top_candidate.text" in df.columns else drafts.get(r["_episode"])
        if not isinstance(draft, str) or not draft.strip():
            continue
        opinion = opinions[(opinions["_episode"] == r["_episode"]) & (opinions["worker_id"] == r["worker_id"])]["own_opinion.text"]
        op = opinion.iloc[0] if len(opinion) else r["own_opinion.text"]
        if not isinstance(op, str) or not op.strip():
            continue
        ex = CritiqueExample(
            participant=r["worker_id"], episode=r["_episode"], group=r["launch_id"], question_id=r["question.id"],
            question=r["question.text"], opinion=op.strip(), draft=draft.strip(), critique=r["critique.text"].strip(),
            round=int(r["iteration_index"]),
        )
        examples.append(ex)
        records.setdefault(ex.participant, ParticipantRecord(ex.participant))
        if ex.round == 1:
            records[ex.participant].critiques.append((ex.question, ex.critique))
    if not examples:
        raise DeliberationError(f"{source}: no critique examples (expected rows with iteration_index >= 1 and a non-empty critique.text)")
    ratings = _ratings_from_frame(df, opinions, source) if "ratings.agreement" in df.columns else []
    return Deliberations(examples, records, source, conds, ratings)


def likert_value(value, source: str) -> float | None:
    """A rating as 1..7: an HM label (``AGREE``, ``['AGREE']``) or a number; None = not rated."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        label = value.strip().strip("[]'\" ").upper().replace(" ", "_")
        if label in ("", "MOCK", "NONE", "NAN"):
            return None
        if label in LIKERT_NAMES:
            return float(LIKERT_NAMES.index(label) + 1)
        try:
            value = float(label)
        except ValueError:
            raise DeliberationError(f"{source}: column ratings.agreement has {value!r} (expected one of {', '.join(LIKERT_NAMES)} or a number 1-7)") from None
    v = float(value)
    if not 1 <= v <= 7:
        raise DeliberationError(f"{source}: column ratings.agreement has {v:g} (expected a rating from 1 to 7)")
    return v


def _ratings_from_frame(df: pd.DataFrame, opinions: pd.DataFrame, source: str) -> list[RatingExample]:
    """One example per rated candidate: ``ratings.agreement[k]`` rates ``candidates.text[k]``."""
    if "candidates.text" not in df.columns:
        raise DeliberationError(f"{source}: column ratings.agreement needs candidates.text (the statements rated, aligned with the ratings)")
    own = {(r["_episode"], r["worker_id"]): r["own_opinion.text"] for _, r in opinions.iterrows()}
    out = []
    for _, r in df.sort_values(["_episode", "iteration_index", "worker_id"], kind="stable").iterrows():
        rated, texts = r["ratings.agreement"], r["candidates.text"]
        if rated is None or texts is None or isinstance(rated, float) or isinstance(texts, float):  # NaN: not rated
            continue
        rated = [rated] if isinstance(rated, str) else list(rated)
        texts = list(texts)
        if len(rated) != len(texts):
            raise DeliberationError(
                f"{source}: episode {r['_episode']}, worker {r['worker_id']}: ratings.agreement has {len(rated)} value(s) "
                f"for {len(texts)} candidates.text (expected one rating per candidate)"
            )
        opinion = own.get((r["_episode"], r["worker_id"]), r["own_opinion.text"])
        if not isinstance(opinion, str) or not opinion.strip():
            continue
        for text, value in zip(texts, rated):
            v = likert_value(value, source)
            if v is not None and isinstance(text, str) and text.strip():
                out.append(RatingExample(r["worker_id"], r["_episode"], r["launch_id"], r["question.id"], r["question.text"], opinion.strip(), text.strip(), v))
    return out


def _drafts_from_ranks(opinions: pd.DataFrame, source: str) -> dict[str, str]:
    """Draft per episode: Schulze winner of the first candidates over the
    group's rankings (HM ranks: 0 = best; -1 = a mock ballot, dropped)."""
    drafts = {}
    for ep, rows in opinions.groupby("_episode", sort=True):
        texts = rows["candidates.text"].iloc[0]
        if texts is None or len(texts) == 0:
            continue
        ballots = []
        for ranks in rows["rankings.numerical_ranks"]:
            r = np.asarray(ranks if ranks is not None else [], dtype=float)
            if len(r) == len(texts) and np.all(r >= 0):
                ballots.append(r)
        if ballots:
            drafts[ep] = str(texts[schulze(np.array(ballots), seed=0).winner])
        else:
            raise DeliberationError(f"{source}: episode {ep}: column rankings.numerical_ranks has no valid ballot over {len(texts)} candidates")
    return drafts


def from_episodes(episodes: Sequence[dict], source: str = "<episodes>", conditionings: dict[str, str] | None = None) -> Deliberations:
    """Examples from EpisodeResult JSON records: each participant's critique of
    each statement (round r critiques statement r-1)."""
    examples, records, ratings = [], {}, []
    for n, ep in enumerate(episodes):
        q = ep["question"]
        group = str(ep.get("group", ep.get("group_id", "g")))
        episode = f"{group}/{q['id']}"
        for slot, pid in enumerate(ep["participants"]):
            rec = records.setdefault(pid, ParticipantRecord(pid))
            rec.opinions.append((q["question"], ep["opinions"][slot]))
            # the participant's self-rated agreement with each round's statement
            for r, row in enumerate((ep.get("payoff") or {}).get("agreement") or []):
                if r < len(ep["statements"]) and ep["statements"][r].strip() and ep["opinions"][slot].strip():
                    ratings.append(RatingExample(
                        pid, episode, group, q["id"], q["question"], ep["opinions"][slot].strip(), ep["statements"][r].strip(), float(row[slot]),
                    ))
            if ep.get("positions"):
                rec.positions.append((q["question"], position_label(ep["positions"][slot])))
            for r, crits in enumerate(ep["critiques"], start=1):
                text = (crits[slot] or "").strip()
                if not text or not ep["opinions"][slot].strip():
                    continue
                if r == 1:
                    rec.critiques.append((q["question"], text))
                examples.append(
                    CritiqueExample(pid, episode, group, q["id"], q["question"], ep["opinions"][slot].strip(), ep["statements"][r - 1].strip(), text, r)
                )
    if not examples:
        raise DeliberationError(f"{source}: no critique examples (episodes need at least one critique round)")
    return Deliberations(examples, records, source, dict(conditionings or {}), ratings)


def _aligned_rating(candidates: list[str], statement: str, rating: float) -> list[str | None] | None:
    """``ratings.agreement`` aligned with ``candidates``: the rating at the
    winning statement, null for candidates the participant did not rate."""
    label = LIKERT_NAMES[int(np.clip(np.rint(rating), 1, 7)) - 1]
    if statement in candidates:
        return [label if c == statement else None for c in candidates]
    return None


def write_parquet(episodes: Sequence[dict], path: str | Path, conditionings: dict[str, str] | None = None) -> Path:
    """Write episode results in the Habermas Machine comparisons layout: per
    participant and round one opinion row (iteration 0) and one row per
    critique round, with the statement critiqued as ``top_candidate.text``,
    the mediator's candidates and the participant's agreement ratings."""
    rows = []
    for ep in episodes:
        q = ep["question"]
        group = str(ep.get("group", "g"))
        mediations = ep.get("mediations", [])
        ratings = ep.get("payoff", {}).get("agreement")
        for slot, pid in enumerate(ep["participants"]):
            base = {
                "launch_id": group, "round_id": q["id"], "worker_id": pid,
                "question.id": q["id"], "question.text": q["question"],
                "question.affirming_statement": q.get("affirming_statement", ""),
                "own_opinion.text": ep["opinions"][slot],
                "position": float(ep["positions"][slot]) if ep.get("positions") else None,
                "personae.conditioning": (conditionings or {}).get(pid),
            }
            for it in range(len(ep["critiques"]) + 1):
                med = mediations[it] if it < len(mediations) else {}
                cands = list(med.get("candidates") or [ep["statements"][it]] if it < len(ep["statements"]) else [])
                ranks = med.get("rankings")
                row = dict(base)
                row.update({
                    "iteration_index": it,
                    "critique.text": ep["critiques"][it - 1][slot] if it >= 1 else None,
                    "top_candidate.text": ep["statements"][it - 1] if it >= 1 else None,
                    "candidates.text": cands,
                    # HM ranks are 0 = best; Personae's mediator logs 1 = best.
                    "rankings.numerical_ranks": [int(x) - 1 for x in ranks[slot]] if ranks else None,
                    # HM layout: one rating per candidate; the participant rated the winner (statement it)
                    "ratings.agreement": _aligned_rating(cands, ep["statements"][it], ratings[it][slot]) if ratings and it < len(ratings) and it < len(ep["statements"]) else None,
                })
                rows.append(row)
    if not rows:
        raise DeliberationError(f"{path}: no episodes to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path
