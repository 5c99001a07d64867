"""Partisan hostility (Pew ATP wave 110 style, as in the higher-order-binding
talk): "Compared to other Americans, would you say Democrats / Republicans
are..." on five traits, 5-point scales. The hostility gap of a party is its
members' mean rating of their own party minus their rating of the other party
(higher = more favourable), with Cohen's d, beside the published human values
(Democrat 1.630 / d 2.208; Republican 1.606 / d 2.263)."""
from __future__ import annotations

import numpy as np

from .base import Item
from .partisan import PARTIES, PartisanModel

TRAITS = [
    ("moral", "immoral"),
    ("honest", "dishonest"),
    ("open-minded", "closed-minded"),
    ("intelligent", "unintelligent"),
    ("hard-working", "lazy"),
]
TARGETS = {"Democrat": "Democrats", "Republican": "Republicans"}


def _options(good: str, bad: str) -> tuple[str, ...]:
    return (f"A lot more {good}", f"Somewhat more {good}", "About the same", f"Somewhat more {bad}", f"A lot more {bad}")


class PartisanHostilityModel(PartisanModel):
    title = "Partisan hostility: trait ratings of Democrats and Republicans"
    gap_kind = "hostility"

    def items(self) -> list[Item]:
        return [
            Item(f"{good}_{party.lower()}", f"Compared to other Americans, would you say {TARGETS[party]} are...", _options(good, bad), group=party)
            for good, bad in TRAITS
            for party in PARTIES
        ]

    def evaluate(self) -> dict:
        rows = []
        for p_i, population in enumerate(self.populations):
            for party in PARTIES:
                other = "Republican" if party == "Democrat" else "Democrat"
                own_ids = [i.id for i in self.item_list if i.group == party]
                other_ids = [i.id for i in self.item_list if i.group == other]
                own = self.ratings(p_i, own_ids, party, favourable_first=True)
                oth = self.ratings(p_i, other_ids, party, favourable_first=True)
                rows.append(self.gap_row(population.label, party, own, oth, {"own_mean": float(np.mean(own)) if len(own) else np.nan, "other_mean": float(np.mean(oth)) if len(oth) else np.nan}))
        notes = [
            "hostility: delta = a party's personas' mean rating of their own party minus their rating of the other party "
            "(1-5, 5 = a lot more moral/honest/...; sampled answers averaged over the five traits); human_delta / human_d: "
            "published human values (Kang et al. 2025, ATP wave 110)."
        ]
        return {"evaluations": [], "tables": {"hostility": self.gap_table(rows)}, "notes": notes}
