"""The Generative Agent baseline (Park et al. 2024, as run in the
higher-order-binding talk): expert personas -- Park et al.'s psychologist,
behavioural economist, political scientist and demographer by default -- each write a reflection on what a persona's backstory says
about its worldview; the persona answers a survey question after
chain-of-thought reasoning over its backstory and those reflections. The
option distribution is read after the reasoning, so the same metrics apply as
for every other condition.

The experts and every prompt are here, in one place; a scenario picks experts
and budgets through ``population.generative_agent``.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.persona_record import PersonaRecord
from core.seeds import derive_seed

from .llm.base import Engine, GenerateRequest, OptionRequest
from .persona import PersonaAgent
from .questions import INSTRUCTION, Question, option_request, question_block

# name -> (title, what the expert is asked to reflect on)
EXPERTS = {
    "psychologist": (
        "Psychologist",
        "As a psychologist, describe in a few sentences this person's personality, values and emotional life, "
        "and how they shape the way the person sees others.",
    ),
    "political_scientist": (
        "Political scientist",
        "As a political scientist, describe in a few sentences this person's political identity, how strongly they "
        "are attached to a party, and how they feel about people of the other party.",
    ),
    "behavioral_economist": (
        "Behavioral economist",
        "As a behavioral economist, describe in a few sentences how this person weighs costs, risks and fairness, "
        "whom they trust, and how they decide when their interests and their group's pull apart.",
    ),
    "sociologist": (
        "Sociologist",
        "As a sociologist, describe in a few sentences the communities this person belongs to and the social forces "
        "that shaped their views.",
    ),
    "demographer": (
        "Demographer",
        "As a demographer, state this person's likely age group, gender, race, education, income, region and party.",
    ),
}
# Park et al. (2024), "Generative Agent Simulations of 1,000 People": the expert
# reflection module's four experts.
PARK2024_EXPERTS = ("psychologist", "behavioral_economist", "political_scientist", "demographer")
REFLECTIONS_HEAD = "Expert reflections on the person above:\n"
REFLECTION_ASK = "\n{instruction}\n{title}:"
REASONING_ASK = (
    "Before answering, think step by step about how this person would answer, given their story and the experts' "
    "reflections.\nReasoning:"
)


@dataclass(frozen=True)
class GenerativeAgentSettings:
    experts: tuple[str, ...] = PARK2024_EXPERTS
    reflection_tokens: int = 96
    reasoning_tokens: int = 64
    temperature: float = 0.7


def reflections(engine: Engine, backstories: list[str], settings: GenerativeAgentSettings, seeds: list[int]) -> list[dict[str, str]]:
    """Each expert's reflection on each backstory (one batch per expert; the
    backstory is every request's shared prefix)."""
    out: list[dict[str, str]] = [{} for _ in backstories]
    for name in settings.experts:
        title, instruction = EXPERTS[name]
        reqs = [
            GenerateRequest(
                prompt=text + REFLECTION_ASK.format(instruction=instruction, title=title),
                max_tokens=settings.reflection_tokens,
                temperature=settings.temperature,
                stop=("\n\n",),
                seed=derive_seed(seed, "reflection", name),
                prefix_len=len(text),
            )
            for text, seed in zip(backstories, seeds)
        ]
        for row, g in zip(out, engine.generate(reqs)):
            row[name] = g.text.strip()
    return out


def conditioning(backstory: str, notes: dict[str, str]) -> str:
    """The backstory followed by the experts' reflections."""
    lines = "".join(f"{EXPERTS[name][0]}: {text}\n" for name, text in notes.items())
    return backstory + REFLECTIONS_HEAD + lines + "\n"


def personas_from(engine: Engine, sources: list[PersonaRecord], bank: str, settings: GenerativeAgentSettings) -> list[PersonaRecord]:
    """Generative Agent persona records built over ``sources`` (persona records
    whose conditioning is the backstory), in the same order."""
    notes = reflections(engine, [p.conditioning for p in sources], settings, [p.seed for p in sources])
    return [
        PersonaRecord(
            persona_id=f"{bank}:{p.idx}",
            bank=bank,
            idx=p.idx,
            method="generative_agent",
            conditioning=conditioning(p.conditioning, n),
            model=p.model,
            prompts={"source": p.persona_id, "experts": {k: EXPERTS[k][1] for k in settings.experts}, "reflections": n},
            params={"reflection_tokens": settings.reflection_tokens, "reasoning_tokens": settings.reasoning_tokens, "temperature": settings.temperature},
            seed=p.seed,
            critic=p.critic,
            profile=p.profile,
        )
        for p, n in zip(sources, notes)
    ]


class GenerativeAgent(PersonaAgent):
    """A persona that reasons (free text) before its option distribution is read."""

    def __init__(self, *args, reasoning_tokens: int = GenerativeAgentSettings.reasoning_tokens, reasoning_temperature: float = GenerativeAgentSettings.temperature, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reasoning_tokens = reasoning_tokens
        self.reasoning_temperature = reasoning_temperature
        self.reasoning: dict[str, str] = {}

    def reasoning_request(self, q: Question) -> GenerateRequest:
        head = self.context() + question_block(q, self.order_for(q))
        return GenerateRequest(
            prompt=head + REASONING_ASK,
            max_tokens=self.reasoning_tokens,
            temperature=self.reasoning_temperature,
            stop=("\nQuestion:", "\n\n"),
            seed=derive_seed(self.persona_id, "reasoning", q.id),
            prefix_len=len(self.context()),
        )

    def reasoned(self, q: Question, text: str) -> None:
        self.reasoning[q.id] = text.strip()

    def ask(self, q: Question, instruction: str = INSTRUCTION) -> OptionRequest:
        req = option_request(self.context(), q, self.order_for(q), instruction)
        why = self.reasoning.get(q.id)
        if why is None:
            return req
        # The reasoning goes between the question and "Answer with (A)...".
        cut = req.suffix.rindex("Answer with")
        return OptionRequest(req.prefix, req.suffix[:cut] + f"Reasoning: {why}\n" + req.suffix[cut:], req.options)
