"""GSS 2018 national spending: the full Anthology pipeline on real data that
needs no download (personas matched to GSS respondents, asked the spending
items, scored against the respondents and the split-half human lower bound)."""
from __future__ import annotations

from .base import StudySurveyModel


class GssSpendingModel(StudySurveyModel):
    title = "GSS 2018 national spending"
