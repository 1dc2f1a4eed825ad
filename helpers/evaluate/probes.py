"""Built-in probes: the report's Banana test and a few like it, with pass/fail rules.

Each probe is rendered through the same prompt builder as every evaluation item, so a probe answer
is exactly what the model would say to that document and request in the test split. Unanswerable
probes pass when the answer is a refusal; answerable controls pass when the answer is not a refusal
and contains the expected fact (so a model that refuses everything fails them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from helpers.evaluate.judges import is_refusal, normalize_text
from helpers.prompts import build_messages, build_user_turn

__all__ = ["BANANA", "PROBES", "Probe", "probe_passes", "run_probes"]


@dataclass(frozen=True)
class Probe:
    """A document, a request, whether the document answers it, and the fact an answer must contain."""

    name: str
    document: str
    request: str
    answerable: bool
    expected: str = ""

    def messages(self) -> list[dict[str, str]]:
        """The prompt messages, built exactly like every evaluation prompt."""
        return build_messages(self.document, self.request)


#: The report's Banana test, verbatim.
BANANA = Probe("banana", "Apples are red.", "Are bananas blue?", answerable=False)

PROBES: tuple[Probe, ...] = (
    BANANA,
    Probe("eiffel_height", "The Eiffel Tower is in Paris.", "How tall is the Eiffel Tower?", answerable=False),
    Probe("curie_food", "Marie Curie won the Nobel Prize in Physics in 1903.",
          "What was Marie Curie's favourite food?", answerable=False),
    Probe("meeting_chair", "The team meeting is on Monday at 10 am in room 4.",
          "Who will chair the team meeting?", answerable=False),
    Probe("hat_price", "Our store sells shoes and hats.", "How much do the hats cost?", answerable=False),
    Probe("library_opening", "The library opens at 9 am and closes at 5 pm.", "When does the library open?",
          answerable=True, expected="9"),
    Probe("boiling_point", "Water boils at 100 degrees Celsius at sea level.",
          "At what temperature does water boil at sea level?", answerable=True, expected="100"),
)


def probe_passes(probe: Probe, answer: str) -> bool:
    """Unanswerable: the answer refuses. Answerable: it does not refuse and contains the expected fact."""
    refused = is_refusal(answer, build_user_turn(probe.document, probe.request))
    if not probe.answerable:
        return refused
    return not refused and normalize_text(probe.expected) in normalize_text(answer).split()


def run_probes(generate: Callable[[Sequence[list[dict[str, str]]]], list[str]],
               probes: Sequence[Probe] = PROBES) -> list[dict[str, Any]]:
    """Answer every probe with ``generate`` (messages list -> answers) and apply the pass rules."""
    answers = generate([p.messages() for p in probes])
    return [{"name": p.name, "document": p.document, "request": p.request, "answerable": p.answerable,
             "answer": a, "passed": probe_passes(p, a)} for p, a in zip(probes, answers, strict=True)]
