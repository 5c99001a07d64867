"""The study errors and warnings: every problem with a study file or its data is one line."""
from __future__ import annotations

import warnings
from collections.abc import Sequence

from core.errors import PersonaeError


class StudyError(PersonaeError, ValueError):
    """A problem in a study definition or its data; the message is one line naming file and field."""

    def __init__(self, message: str) -> None:
        # Names taken from the data (columns, labels) may hold line breaks: keep one line, lose nothing.
        super().__init__(message if str(message).isprintable() else repr(str(message))[1:-1])


class StudyWarning(UserWarning):
    """A study loaded, but something in it deserves a look (kept in :attr:`HumanStudy.warnings`)."""


class UnknownName(StudyError, KeyError):
    """A question, trait or option name the study does not have."""

    def __str__(self) -> str:  # the message as is: KeyError would quote it
        return str(self.args[0]) if self.args else type(self).__name__


def _warn(notes: Sequence[str]) -> None:
    for note in notes:
        warnings.warn(note, StudyWarning, stacklevel=3)
