"""Consensus mechanisms: social choice, payoffs, mediators, episodes and
digital representatives (see SPEC section 6)."""
from .episode import Episode, EpisodeConfig, EpisodeResult, Participant, Question, load_questions, run_episode
from .mediators import HabermasMediator, LLMMediator, LogRecord, Mediator, OpinionMediator, Transcript, derive_seed, make_mediator
from .payoff import LIKERT7, LikertAnswer, PayoffSummary, expected_value
from .representatives import (
    SUBSETS,
    ParticipantRecord,
    RepresentativityReport,
    conditioning,
    records_from_episodes,
    representative,
    representativity,
    value_gap,
)
from .social_choice import SocialChoiceResult, aggregate, borda, plurality, schulze

__all__ = [
    "Episode", "EpisodeConfig", "EpisodeResult", "Participant", "Question", "load_questions", "run_episode",
    "HabermasMediator", "LLMMediator", "LogRecord", "Mediator", "OpinionMediator", "Transcript", "derive_seed",
    "make_mediator", "LIKERT7", "LikertAnswer", "PayoffSummary", "expected_value", "SUBSETS", "ParticipantRecord",
    "RepresentativityReport", "conditioning", "records_from_episodes", "representative", "representativity",
    "value_gap", "SocialChoiceResult", "aggregate", "borda", "plurality", "schulze",
]
