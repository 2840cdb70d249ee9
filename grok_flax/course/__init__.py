"""The course's exercises: every "Try this" of a notebook has a checker here that the learner
calls on their own answer::

    from grok_flax.course import ch02
    ch02.rotate_pair(my_rotate_pair)   # prints what is right or wrong, and why; True when right

A checker is an ``Exercise``: the task in one sentence, a ``judge`` that returns ``None`` for a
right answer or a sentence saying what is wrong and why, and makers of plausible wrong answers
(the test suite feeds each one to the checker, which must reject it). The reference solutions
sit in the notebooks, in collapsed cells tagged ``solution`` that the tests execute: each ends
by asserting its checker accepts it.

One module per notebook (``ch01`` … ``ch11``). An unanswered exercise (``...`` or ``None``) is
reported as such, never as wrong.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Exercise", "Verdict", "exercise", "exercises"]


class Verdict:
    """What a checker returns: true when the answer is right. It prints nothing more in a
    notebook (the checker already said why), so a learner's cell shows only that message."""

    def __init__(self, right: bool):
        self.right = bool(right)

    def __bool__(self) -> bool:
        return self.right

    def __repr__(self) -> str:
        return f"Verdict({self.right})"

    def _ipython_display_(self) -> None:  # IPython: display nothing (the message is printed)
        pass


@dataclass(frozen=True)
class Exercise:
    """One "Try this": call it on your answer (``ch04.top2_share(my_answer)``)."""

    chapter: str  # the notebook's number, "04"
    name: str  # the checker's name in its chapter module (``grok_flax.course.ch04``)
    task: str  # what the learner is asked, in one sentence
    judge: Callable[[Any], str | None]  # None when right; else what is wrong, and why
    wrong: tuple[Callable[[], Any], ...]  # makers of plausible wrong answers: each is rejected
    praise: str = ""  # what a right answer shows, printed with the tick

    def __call__(self, answer: Any) -> Verdict:
        """Judge ``answer``: print ✓ or ✗ with the reason; return a ``Verdict``, true when
        the answer is right (``assert ch04.top2_share(answer)``)."""
        if answer is ... or answer is None:
            print(f"… {self.name}: not answered yet. {self.task}")
            return Verdict(False)
        try:
            problem = self.judge(answer)
        except Exception as e:  # a learner's function that raises is a wrong answer, explained
            problem = f"checking your answer raised {type(e).__name__}: {e}"
        if problem is None:
            print(f"✓ {self.name}: right. {self.praise}".rstrip())
            return Verdict(True)
        print(f"✗ {self.name}: {problem}")
        return Verdict(False)

    def __repr__(self) -> str:
        return f"<exercise {self.chapter}.{self.name}: {self.task}>"


_REGISTRY: dict[str, Exercise] = {}


def exercise(
    chapter: str, *, task: str, wrong: Sequence[Callable[[], Any]], praise: str = ""
) -> Callable[[Callable[[Any], str | None]], Exercise]:
    """Decorate a judge (``answer -> None | "what is wrong"``) into a registered Exercise named
    after it. ``wrong``: at least one maker of a plausible wrong answer."""

    def make(judge: Callable[[Any], str | None]) -> Exercise:
        if not wrong:
            raise ValueError(f"exercise {chapter}.{judge.__name__}: give at least one wrong answer")
        ex = Exercise(chapter, judge.__name__, task, judge, tuple(wrong), praise)
        key = f"{chapter}.{ex.name}"
        if key in _REGISTRY:
            raise ValueError(f"exercise {key} is defined twice")
        _REGISTRY[key] = ex
        return ex

    return make


def exercises() -> dict[str, Exercise]:
    """Every exercise of the course, as ``{"04.top2_share": Exercise}`` (imports ch01…ch11)."""
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("ch"):
            importlib.import_module(f"{__name__}.{info.name}")
    return dict(sorted(_REGISTRY.items()))
