"""GSS 2018 national spending: a preset of the generic survey scenario
(``scenarios.survey``) on real data that needs no download -- personas
matched to GSS respondents, asked the spending items, scored against the
respondents and the split-half human lower bound."""
from __future__ import annotations

from .survey import SurveyScenario


class GssSpendingModel(SurveyScenario):
    """``scenario: survey`` with ``human.study: gss_spending``; kept as a name for existing YAMLs."""
    scenario = "gss_spending"
