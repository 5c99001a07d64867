"""The one configuration base: strict pydantic models (unknown fields are errors)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Every configuration section: a typo'd field is an error, never ignored."""

    model_config = ConfigDict(extra="forbid")
