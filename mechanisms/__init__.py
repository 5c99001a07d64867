"""Consensus mechanisms: social choice, payoffs, mediators, episodes and
digital representatives (see SPEC section 6)."""
from .autorater import ConsensusPair, WinRate, consensus_win_rate
from .cot_ranking import ParsedRanking, parse_ranking
from .episode import Episode, EpisodeConfig, EpisodeResult, Participant, Question, load_questions, run_episode
from .mediators import HabermasMediator, LLMMediator, LogRecord, Mediator, OpinionMediator, Transcript, make_mediator
from .payoff import LIKERT7, LikertAnswer, PayoffSummary, disagreement, expected_value
from .representatives import (
    SUBSETS,
    ConditioningError,
    ParticipantRecord,
    RepresentativityReport,
    conditioning,
    records_from_episodes,
    representative,
    representativity,
    require_parts,
    value_gap,
)
from .social_choice import SocialChoiceResult, aggregate, borda, plurality, schulze

__all__ = [
    "Episode", "EpisodeConfig", "EpisodeResult", "Participant", "Question", "load_questions", "run_episode",
    "HabermasMediator", "LLMMediator", "LogRecord", "Mediator", "OpinionMediator", "Transcript",
    "make_mediator", "LIKERT7", "LikertAnswer", "PayoffSummary", "expected_value", "SUBSETS", "ParticipantRecord",
    "RepresentativityReport", "conditioning", "records_from_episodes", "representative", "representativity",
    "value_gap", "ConditioningError", "require_parts", "ConsensusPair", "WinRate", "consensus_win_rate",
    "ParsedRanking", "parse_ranking", "disagreement", "SocialChoiceResult", "aggregate", "borda", "plurality", "schulze",
]
