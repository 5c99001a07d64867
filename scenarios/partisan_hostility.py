"""Partisan hostility (Pew ATP wave 110 style, as in the higher-order-binding
talk): "Compared to other Americans, would you say Democrats / Republicans
are..." on five traits, 5-point scales. The hostility gap of a party is its
members' mean rating of their own party minus their rating of the other party
(higher = more favourable), with Cohen's d, beside the matched respondents'
value (the same items in a Pew ATP W110 study; the party thermometers in ANES)
and the published human values (Democrat 1.630 / d 2.208; Republican 1.606 /
d 2.263; Pew ATP W110, Kang et al. 2025)."""
from __future__ import annotations

import numpy as np

from analysis.partisan import has_thermometers, party_rows, thermometer_ratings

from .base import Item
from .contract import ScenarioReport
from .items import PLURAL
from .partisan import OTHER, PARTIES, HumanSide, PartisanModel

TRAITS = [
    ("moral", "immoral"),
    ("honest", "dishonest"),
    ("open-minded", "closed-minded"),
    ("intelligent", "unintelligent"),
    ("hard-working", "lazy"),
]


def _options(good: str, bad: str) -> tuple[str, ...]:
    return (f"A lot more {good}", f"Somewhat more {good}", "About the same", f"Somewhat more {bad}", f"A lot more {bad}")


class PartisanHostilityModel(PartisanModel):
    scenario = "partisan_hostility"
    title = "Partisan hostility: trait ratings of Democrats and Republicans"
    gap_kind = "hostility"

    def items(self) -> list[Item]:
        return [
            Item(f"{good}_{party.lower()}", f"Compared to other Americans, would you say {PLURAL[party]} are...", _options(good, bad), group=party)
            for good, bad in TRAITS
            for party in PARTIES
        ]

    def human_gap(self, party: str) -> HumanSide | None:
        """The matched respondents' own- and other-party ratings: the same trait
        items when the study holds them (Pew ATP W110), else the party feeling
        thermometers (ANES), a different instrument, labelled so."""
        other = OTHER[party]
        own_ids = [i.id for i in self.item_list if i.group == party]
        other_ids = [i.id for i in self.item_list if i.group == other]
        rows = party_rows(self.study, party)
        if self.holds(own_ids + other_ids, party):
            own, w = self.human_ratings(own_ids, party, favourable_first=True)
            oth, _ = self.human_ratings(other_ids, party, favourable_first=True)
            return HumanSide(own, oth, w, w, True, f"matched {self.study.name} respondents, the same trait items")
        if has_thermometers(self.study):
            own, oth = thermometer_ratings(self.study, rows, party)
            w = self.study.weights[rows]
            return HumanSide(own, oth, w, w, True, f"matched {self.study.name} respondents: party feeling thermometers, own minus other party (five bins; not the trait items)")
        return None

    def evaluate(self) -> ScenarioReport:
        rows = []
        for p_i, population in enumerate(self.populations):
            for party in PARTIES:
                own_ids = [i.id for i in self.item_list if i.group == party]
                other_ids = [i.id for i in self.item_list if i.group == OTHER[party]]
                (own, oth), w = self.paired_ratings(p_i, [own_ids, other_ids], party, favourable_first=True)
                extra = {"persona_own_mean": float(np.average(own, weights=w)) if len(own) else np.nan,
                         "persona_other_mean": float(np.average(oth, weights=w)) if len(oth) else np.nan}
                rows.append(self.gap_row(population.label, party, own, w, oth, w, paired=True, extra=extra))
        wd = self.party_wd_rows([i.id for i in self.item_list])
        table = self.with_wd(self.gap_table(rows), wd, [i.id for i in self.item_list])
        tables = {"hostility": table}
        if wd:
            tables["hostility_wd"] = self.gap_table(wd)
        notes = [
            "hostility: delta = a party's mean rating of their own party minus their rating of the other party "
            "(positions 1-5, 5 = a lot more moral/honest/..., averaged over the five traits)."
        ]
        return self.partisan_report(tables, notes, self.partisan_plots("hostility", table, "own minus other party (1-5)"))
