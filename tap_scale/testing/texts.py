"""Phrase banks for believable prompts, responses and rater comments, picked by a seeded Random.

Some prompts are not in English so that clients meet non-ASCII text in every project.
"""

from __future__ import annotations

import typing as t

from tap_scale.testing.seeds import pick

if t.TYPE_CHECKING:
    import random

TOPICS = (
    "photosynthesis",
    "the French Revolution",
    "binary search trees",
    "compound interest",
    "plate tectonics",
    "the TCP handshake",
    "vaccine trials",
    "sourdough fermentation",
    "black holes",
    "supply and demand",
    "the Rust borrow checker",
    "jazz harmony",
    "marathon training",
    "quantum entanglement",
    "tax brackets",
    "CRISPR gene editing",
)

PROMPTS = (
    "Explain {topic} to a curious twelve-year-old.",
    "Write a short summary of {topic} with three key facts.",
    "What are the most common misconceptions about {topic}?",
    "Compare two competing explanations of {topic} and say which is better supported.",
    "Draft an email to my team explaining why {topic} matters for our project.",
    "Give me a step-by-step plan to learn {topic} in two weeks.",
    "Write a limerick about {topic}.",
    "Is it true that {topic} was discovered by accident? Cite sources.",
    "Explique {topic} en trois phrases simples.",
    "¿Puedes resumir {topic} para un examen de mañana?",
    "{topic} について、初心者向けに簡単に説明してください。",
    "Erkläre {topic} anhand eines alltäglichen Beispiels.",
)

SENTENCES = (
    "At its core, {topic} is easier to grasp once you see the pattern behind it.",
    "A useful way to think about {topic} is as a balance between two competing forces.",
    "Most introductions to {topic} skip the historical context, which explains a lot.",
    "The key idea is that small changes compound into large effects over time.",
    "Researchers still debate some of the finer points, but the basics are well established.",
    "A common mistake is to treat the simplified model as the whole story.",
    "In practice, the details depend heavily on the specific conditions involved.",
    "Here is a concrete example that makes the abstract description more tangible.",
    "If you remember only one thing, remember that the process is iterative.",
    "This is why experts recommend checking the assumptions before drawing conclusions.",
    "The numbers below are approximate and meant only to show the order of magnitude.",
    "Several textbooks describe {topic} differently, so terminology can be confusing.",
    "To verify this yourself, try the simple experiment described in the next paragraph.",
    "That said, there are important exceptions worth knowing about.",
)

SYSTEM_PROMPTS = (
    "You are a helpful, honest and harmless assistant.",
    "You are a patient tutor. Answer step by step and check the student's understanding.",
    "You are a coding assistant. Prefer short, tested code and explain trade-offs briefly.",
)

COMMENTS = (
    "The response follows the instructions but misses one of the requested facts.",
    "Accurate and well organised; the tone fits the audience.",
    "Contains a factual error in the second paragraph about dates.",
    "Too verbose: the key point is buried after several sentences of preamble.",
    "Good structure, but the example does not match the explanation.",
    "Refuses a harmless request; should have answered directly.",
    "Clear and concise; no issues found.",
    "The formatting breaks the numbered list halfway through.",
)


class Writer:
    """Text for one task, drawn from the banks with the task's own Random."""

    def __init__(self, rng: random.Random) -> None:
        """Write with this Random; the task's topic is drawn once and kept."""
        self._rng = rng
        self.topic = pick(rng, TOPICS)

    def prompt(self) -> str:
        """A user prompt about the task's topic."""
        return pick(self._rng, PROMPTS).format(topic=self.topic)

    def paragraph(self, sentences: tuple[int, int] = (2, 5)) -> str:
        """A few sentences of response prose."""
        count = self._rng.randint(*sentences)
        return " ".join(pick(self._rng, SENTENCES).format(topic=self.topic) for _ in range(count))

    def system_prompt(self) -> str:
        """A system message."""
        return pick(self._rng, SYSTEM_PROMPTS)

    def comment(self) -> str:
        """A rater's free-text comment or justification."""
        return pick(self._rng, COMMENTS)

    def sentence(self) -> str:
        """One sentence of prose."""
        return pick(self._rng, SENTENCES).format(topic=self.topic)
