"""Meta-prejudice (Moore-Berg et al. 2020) as in the higher-order-binding talk:
feeling thermometers toward the other party and the meta-perception "how warm or
cold do you think [other party] feel towards [your party]?", five bins.

* Self-ratings are compared with the real ANES partisans each agent stands for
  (their thermometer toward the other / own party, binned into five equal
  bins): Wasserstein distance per party, and the own-minus-other thermometer
  gap of personas beside the matched respondents'.
* The meta-perception gap per party -- how warm the other side really is
  (the other party's personas' own rating) minus how warm partisans believe it
  is -- with Cohen's d and a bootstrap interval, beside the matched
  respondents' value when their study holds the meta-perception item (ANES
  does not) and the published human values (Democrat 1.091 / d 0.761;
  Republican 1.182 / d 0.768; Moore-Berg et al. 2020, Kang et al. 2025).
"""
from __future__ import annotations

import numpy as np

from analysis.distributions import weighted_distribution
from analysis.partisan import has_thermometers, party_rows, thermometer_ratings

from .base import Item
from .contract import ScenarioReport
from .partisan import OTHER, PARTIES, HumanSide, PartisanModel

SCALE = ("Very cold", "Cold", "Neutral", "Warm", "Very warm")


class MetaPrejudiceModel(PartisanModel):
    scenario = "meta_prejudice"
    title = "Meta-prejudice: feeling thermometers and meta-perceptions"
    gap_kind = "meta_perception"
    # The ANES thermometers answer the self-rating items of a respondent of each party.
    human_questions = {
        "feel_other": {"Democrat": "therm_gop", "Republican": "therm_dem"},
        "feel_own": {"Democrat": "therm_dem", "Republican": "therm_gop"},
    }

    def items(self) -> list[Item]:
        return [
            Item("feel_other", "How warm or cold do you feel towards {other}?", SCALE, group="self"),
            Item("feel_own", "How warm or cold do you feel towards {own}?", SCALE, group="self"),
            Item("meta_other", "How warm or cold do you think {other} feel towards {own}?", SCALE, group="meta"),
        ]

    def human_answers(self, agent, item_id: str):
        """The real respondent's binned thermometer for a self-rating item."""
        if self.study is None or agent.human is None:
            return None
        hq = self.human_question(item_id, agent.party)
        if hq is None:
            return None
        val = self.study.responses[hq].iloc[agent.human]
        return None if np.isnan(val) else int(val)

    def human_gap(self, party: str) -> HumanSide | None:
        """Meta-perception gap of the matched respondents: the other party's own
        warmth toward this party minus this party's believed warmth, when the
        study holds the meta-perception item (Moore-Berg et al.; ANES does not)."""
        other = OTHER[party]
        if not (self.holds(["meta_other"], party) and self.holds(["feel_other"], other)):
            return None
        believed, wb = self.human_ratings(["meta_other"], party)
        actual, wa = self.human_ratings(["feel_other"], other)
        return HumanSide(actual, believed, wa, wb, False, f"matched {self.study.name} respondents, the same items")

    def human_thermometer_gap(self, party: str) -> HumanSide | None:
        """The matched respondents' own-party minus other-party thermometer (five bins)."""
        if not has_thermometers(self.study):
            return None
        rows = party_rows(self.study, party)
        own, other = thermometer_ratings(self.study, rows, party)
        w = self.study.weights[rows]
        return HumanSide(own, other, w, w, True, f"matched {self.study.name} respondents: party feeling thermometers (five bins)")

    def evaluate(self) -> ScenarioReport:
        gaps, therm = [], []
        for p_i, population in enumerate(self.populations):
            for party in PARTIES:
                other = OTHER[party]
                believed, wb = self.ratings(p_i, ["meta_other"], party)
                actual, wa = self.ratings(p_i, ["feel_other"], other)
                gaps.append(self.gap_row(population.label, party, actual, wa, believed, wb, paired=False))
                (own, oth), w = self.paired_ratings(p_i, [["feel_own"], ["feel_other"]], party)
                therm.append(self.gap_row(population.label, party, own, w, oth, w, paired=True, kind="", human_side=self.human_thermometer_gap))
        wd = self.party_wd_rows([i.id for i in self.item_list])
        gap_table = self.with_wd(self.gap_table(gaps), wd, ["meta_other", "feel_other"])
        tables = {"meta_perception": gap_table, "thermometer_gap": self.with_wd(self.gap_table(therm), wd, ["feel_own", "feel_other"])}
        if wd:
            tables["self_ratings_wd"] = self.gap_table(wd)
        notes = [
            "meta_perception: delta = mean warmth the other party's personas report toward this party minus the warmth this "
            "party's personas believe the other party feels (positions 1-5).",
            "thermometer_gap: a party's warmth toward its own party minus toward the other party (positions 1-5; the "
            "hostility/self-rating comparison the thermometers of the matched humans allow).",
            "self_ratings_wd: per party and self-rating item, WD between the personas' answer distribution and the matched "
            "respondents' binned thermometers (survey weights, five equal bins of 0-100), with the respondents' own "
            "split-half WD (mean over 100 random halves).",
        ]
        plots = self.partisan_plots("meta_perception", gap_table, "actual minus believed warmth (1-5)")
        from analysis.partisan_plots import plot_gaps

        if len(therm):
            plots["plots/thermometer_gaps"] = plot_gaps(self.gap_table(therm), f"{self.cfg.name}: own minus other party thermometer", "own minus other (1-5)")
        return self.partisan_report(tables, notes, plots)

    def human_distribution(self, item_id: str) -> np.ndarray | None:
        """The represented partisans' binned thermometers for a self-rating
        item (toward the other / own party), survey-weighted; None otherwise."""
        if item_id not in self.human_questions or self.study is None or not self.populations:
            return None
        agents = [a for a in self.agents_of(0) if a.human is not None]
        vals = np.array([np.nan if (v := self.human_answers(a, item_id)) is None else v for a in agents], dtype=float)
        if not np.isfinite(vals).any():
            return None
        return weighted_distribution(vals, len(SCALE), np.array([self.study.weights[a.human] for a in agents]))
