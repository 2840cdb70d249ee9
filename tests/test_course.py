"""The notebooks read as a course (issue 25), checked on the committed files:

- short steps: no code cell over 25 lines; at least 1.2 characters of explanation (markdown)
  per character of code; every figure followed by a markdown cell saying what to see in it;
- a "you are here" architecture figure with the notebook's part highlighted, before any build;
- at least one "**Predict, then run.**" question;
- every "Try this" calls a checker of ``grok_flax.course``; the reference solutions sit in
  collapsed cells tagged ``solution`` (executed, and asserted, when the notebooks run);
- every checker rejects each of its plausible wrong answers, and an unanswered ``...``.
"""

import json
import re

import pytest
from conftest import ROOT

from grok_flax.course import Exercise, exercises

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
MAX_CODE_LINES = 25
MIN_MARKDOWN_RATIO = 1.2
PREDICT = "**Predict, then run.**"


def _cells(path):
    cells = json.loads(path.read_text())["cells"]
    for c in cells:
        c["text"] = "".join(c["source"])
    return cells


def _has_figure(cell) -> bool:
    return any("image/png" in o.get("data", {}) for o in cell.get("outputs", []))


def _is_solution(cell) -> bool:
    return "solution" in cell.get("metadata", {}).get("tags", [])


def ratio(cells) -> float:
    md = sum(len(c["text"]) for c in cells if c["cell_type"] == "markdown")
    code = sum(len(c["text"]) for c in cells if c["cell_type"] == "code" and not _is_solution(c))
    return md / max(code, 1)


ids = [p.stem[:2] for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_code_cells_are_short_steps(path):
    long = [
        (i, len(c["text"].splitlines()))
        for i, c in enumerate(_cells(path))
        if c["cell_type"] == "code" and len(c["text"].splitlines()) > MAX_CODE_LINES
    ]
    assert not long, f"{path.name}: code cells (index, lines) over {MAX_CODE_LINES} lines: {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_more_words_than_code(path):
    r = ratio(_cells(path))
    assert r >= MIN_MARKDOWN_RATIO, (
        f"{path.name}: {r:.2f} markdown characters per code character "
        f"(solutions not counted), under {MIN_MARKDOWN_RATIO}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_every_figure_is_followed_by_what_to_see(path):
    cells = _cells(path)
    bare = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "code"
        and _has_figure(c)
        and not _is_solution(c)
        and (i + 1 == len(cells) or cells[i + 1]["cell_type"] != "markdown")
    ]
    assert not bare, f"{path.name}: figures with no markdown cell after them, cells {bare}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_opens_with_you_are_here(path):
    """The first figure is the architecture with this notebook's part highlighted."""
    cells = _cells(path)
    first = next(i for i, c in enumerate(cells) if c["cell_type"] == "code" and _has_figure(c))
    assert re.search(r"viz\.architecture\([^)]*highlight=", cells[first]["text"]), (
        f"{path.name}: the first figure (cell {first}) is not viz.architecture(..., highlight=...)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_asks_to_predict(path):
    cells = _cells(path)
    asks = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown"
        and PREDICT in c["text"]
        and i + 1 < len(cells)
        and cells[i + 1]["cell_type"] == "code"
    ]
    assert asks, f"{path.name}: no '{PREDICT}' question followed by a code cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_exercises_have_checkers_and_hidden_solutions(path):
    chapter = path.name[:2]
    cells = _cells(path)
    mine = {k.split(".")[1] for k in exercises() if k.startswith(chapter + ".")}
    assert mine, f"{path.name}: no exercise in grok_flax/course/ch{chapter}.py"
    learner = "".join(c["text"] for c in cells if c["cell_type"] == "code" and not _is_solution(c))
    solutions = [c for c in cells if _is_solution(c)]
    for name in sorted(mine):
        call = f"ch{chapter}.{name}("
        assert call in learner, f"{path.name}: the learner never calls {call}…)"
        solved = [c for c in solutions if re.search(rf"assert\s+ch{chapter}\.{name}\(", c["text"])]
        assert solved, f"{path.name}: no solution cell asserting ch{chapter}.{name}(…)"
    for c in solutions:
        meta = c["metadata"]
        assert meta.get("jupyter", {}).get("source_hidden"), (
            f"{path.name}: a solution cell is not collapsed (metadata.jupyter.source_hidden)"
        )
        assert "hide-input" in meta.get("tags", []), (
            f"{path.name}: a solution cell is not tagged hide-input (the website's toggle)"
        )


@pytest.mark.parametrize("key", sorted(exercises()))
def test_every_checker_rejects_wrong_answers(key, capsys):
    ex = exercises()[key]
    assert isinstance(ex, Exercise)
    assert not ex(...)
    assert "not answered" in capsys.readouterr().out
    for i, make in enumerate(ex.wrong):
        assert not ex(make()), f"{key} accepted wrong answer #{i}"
        out = capsys.readouterr().out
        assert out.startswith("✗") and len(out) > 20, f"{key}: no reason given for #{i}: {out!r}"


def test_every_notebook_has_exercises():
    chapters = {k[:2] for k in exercises()}
    assert chapters == set(ids), sorted(set(ids) - chapters)
