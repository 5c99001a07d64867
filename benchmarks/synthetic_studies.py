"""Synthetic respondents standing in for human data that cannot ship.

The Pew ATP waves (W34, W92, W99, W110) are not redistributable and the Braley
et al. 2023 / Moore-Berg et al. 2020 studies are templates for the user's own
copy, so a benchmark at paper size has no respondents for them. This module
writes a CSV of the same *shape* from a study's YAML: the same columns, the
same answer codes (``values`` keys, 1..K codes, refusal codes, numeric values
inside ``bins``), a survey-weight column when the study names one, a leaners
column when it counts leaners, and the size of the published sample times a
scale. Marginals are plausible, not real: seeded skewed option shares per
item, answers that depend on the respondent's party (so partisan gaps and
split-half bounds are not degenerate), ~2% refusals.

NOTHING MEASURED ON THESE FILES IS A FINDING: they exist to exercise the
pipeline at size. Callers must say so in their output.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.studies import BinsSpec, StudySpec, load_spec

# Published sample sizes (respondents in the wave / study). Pew: the topline
# reports of each wave. Braley and Moore-Berg ran several samples; the figures
# here are round stand-ins of the right order, not checked against the papers.
PUBLISHED_N: dict[str, int] = {
    "atp_w34": 2537,
    "atp_w92": 10221,
    "atp_w99": 10260,
    "atp_w110": 6174,
    "braley2023_subversion": 1000,
    "moore_berg2020_metaprejudice": 1000,
}

# Studies whose data cannot ship (the benchmark synthesises them).
UNSHIPPABLE = tuple(PUBLISHED_N)

REFUSAL_RATE = 0.02
PARTY_SHARES = {"Republican": 0.29, "Democrat": 0.33, "Independent": 0.28, "Something else": 0.10}


@dataclass(frozen=True)
class SyntheticStudy:
    """One synthetic file and how to point a study at it."""

    study: str
    path: Path
    n: int
    columns: tuple[str, ...]

    @property
    def overrides(self) -> dict:
        """``human.overrides`` that read this file instead of the real one."""
        return {"source": {"kind": "csv", "path": str(self.path)}}

    def banner(self) -> str:
        return (f"SYNTHETIC DATA: {self.study} is not real survey data -- {self.n} synthetic respondents "
                f"of the same shape ({len(self.columns)} columns) from {self.path}")


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def _edges(bins: BinsSpec | int | None, rng_range, k: int) -> np.ndarray:
    if isinstance(bins, BinsSpec) and bins.edges is not None:
        return np.asarray(bins.edges, dtype=float)
    count = bins.count if isinstance(bins, BinsSpec) and bins.count else (bins if isinstance(bins, int) else k)
    lo, hi = (bins.range if isinstance(bins, BinsSpec) and bins.range else None) or rng_range or (0, 100)
    return np.linspace(float(lo), float(hi), int(count) + 1)


def _raw_codes(item) -> list:
    """Per option index, the raw codes that mean it (first one is written)."""
    k = len(item.options)
    if item.values:
        out: list[list] = [[] for _ in range(k)]
        for raw, target in item.values.items():
            idx = target if isinstance(target, int) and not isinstance(target, bool) else item.options.index(str(target))
            out[idx].append(raw)
        return [codes[0] if codes else i + 1 for i, codes in enumerate(out)]
    return list(range(1, k + 1))  # codes: one_based, the loader's default


def _column(item, option_idx: np.ndarray, rng: np.random.Generator, refusal: bool) -> np.ndarray:
    """Raw values for option indices (-1: refused / missing)."""
    k = len(item.options)
    if item.bins is not None:
        edges = _edges(item.bins, item.range, k)
        lo = edges[option_idx.clip(0)]
        hi = np.minimum(edges[option_idx.clip(0) + 1], lo + 60)  # an open last bin (.inf / 120): plausible values
        vals = np.floor(lo + rng.random(len(option_idx)) * np.maximum(hi - lo, 1e-9)).astype(float)
        vals = np.minimum(vals, np.nextafter(edges[option_idx.clip(0) + 1], -np.inf))
        vals = np.maximum(vals, lo)
        vals[option_idx < 0] = np.nan
        return vals
    codes = _raw_codes(item)
    out = np.array([codes[i] if i >= 0 else None for i in option_idx], dtype=object)
    if refusal:
        miss = option_idx < 0
        listed = list(item.refusal or item.missing)
        refuse = listed[0] if listed else (None if item.values else 99)  # 99: dropped as a code >= 90
        out[miss] = refuse
    return out


def _shares(rng: np.random.Generator, k: int, tilt: float = 0.0) -> np.ndarray:
    base = rng.dirichlet(np.full(k, 2.0))
    ramp = np.exp(tilt * np.linspace(-1, 1, k))  # partisan lean along the ordinal scale
    p = base * ramp
    return p / p.sum()


def synthesize(study: str, n: int, folder: str | Path, seed: int = 0) -> SyntheticStudy:
    """Write ``n`` synthetic respondents of ``study`` (a built-in name or YAML
    path) to ``folder/<name>.csv``; deterministic in (study, n, seed)."""
    spec: StudySpec = load_spec(study)[0]
    rng = np.random.default_rng(_seed(spec.name, n, seed))
    cols: dict[str, np.ndarray] = {}
    party_idx = None
    party_trait = next((t for t in spec.demographics if t.trait == "party"), None)
    for t in spec.demographics:
        k = len(t.options)
        if t is party_trait:
            p = np.array([PARTY_SHARES.get(o, 0.05) for o in t.options])
            p = p / p.sum()
        else:
            p = _shares(rng, k)
        idx = rng.choice(k, size=n, p=p)
        refused = rng.random(n) < (REFUSAL_RATE if (t.refusal or t.missing) else 0.0)
        idx = np.where(refused, -1, idx)
        if t is party_trait:
            party_idx = idx
        cols[t.column] = _column(t, idx, rng, refusal=True)
    # Party sign: +1 Republican, -1 Democrat, 0 otherwise; answers lean with it.
    sign = np.zeros(n)
    if party_trait is not None and party_idx is not None:
        labels = np.array(party_trait.options + ["?"])[party_idx]
        sign = np.where(labels == "Republican", 1.0, np.where(labels == "Democrat", -1.0, 0.0))
    for q in spec.questions:
        k = len(q.options)
        tilt = rng.normal(0, 1.2)
        groups = {s: _shares(rng, k, tilt * s) for s in (-1.0, 0.0, 1.0)}
        idx = np.empty(n, dtype=int)
        for s, p in groups.items():
            m = sign == s
            idx[m] = rng.choice(k, size=int(m.sum()), p=p)
        idx = np.where(rng.random(n) < REFUSAL_RATE, -1, idx)
        cols[q.column or q.id] = _column(q, idx, rng, refusal=True)
    if spec.partisans is not None and spec.partisans.column and spec.partisans.column not in cols:
        # Leaners: Independents / something else lean Republican (1), Democrat (2) or neither (3).
        lean = rng.choice([1, 2, 3], size=n, p=[0.35, 0.35, 0.30])
        cols[spec.partisans.column] = np.where(sign == 0, lean, np.where(sign > 0, 1, 2))
    if spec.weight:
        w = rng.lognormal(0.0, 0.5, n)
        cols[spec.weight] = w / w.mean()
    for col, f in (spec.filters or {}).items():  # keep every row through the study's filters
        if col not in cols:
            value = f if not isinstance(f, list) else f[0]
            cols[col] = np.full(n, getattr(value, "min", None) or value, dtype=object)
    df = pd.DataFrame(cols)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.csv"
    df.to_csv(path, index=False)
    return SyntheticStudy(study=spec.name, path=path.resolve(), n=n, columns=tuple(df.columns))
