"""Sphinx configuration of the course website: ``make book`` builds it into ``runs/book/``.

The site is built from what is committed, never re-executed: the ten executed notebooks
(MyST-NB reads their stored outputs), the pages of ``docs/``, and an API reference that
autodoc generates from the docstrings. Why this stack: it is what JAX's and Flax's own
documentation use (Sphinx, MyST-NB for notebooks, a book theme), it renders the notebooks'
outputs and ``$…$`` math as they are, and Sphinx's cross-references let a strict build
(``-W -n``) fail on every broken link, missing image or bad docstring. MathJax is served from
the site itself (``sphinx-mathjax-offline``), so pages typeset without a CDN.

The source folder is the repository root (``sphinx-build -c docs . OUT``): the notebooks'
links to ``../docs/*.md`` and the docs' links to ``../notebooks/*.ipynb`` resolve as they do
on GitHub. ``docs/architecture.md``'s module → notebook table is the one map of which
notebook teaches which module: the API pages and the notebooks' "in the library" boxes are
generated from it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # document this checkout's grok_flax
os.environ.setdefault("JAX_PLATFORMS", "cpu")

project = "grok_flax"
author = "the grok_flax authors"
copyright = "2026, the grok_flax authors (Apache-2.0)"
root_doc = "docs/index"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",
]

include_patterns = ["docs/*.md", "docs/api/*.md", "notebooks/[0-9][0-9]_*.ipynb"]
exclude_patterns = [".venv", ".git", "runs", "tests", "benchmarks", "grok_flax", "tools"]

# notebooks: shown with the outputs they were committed with
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

# the API reference
autodoc_member_order = "bysource"
autodoc_typehints = "description"  # types listed under each entry: signatures stay short
autodoc_class_signature = "separated"  # nnx modules' metaclass hides __init__'s signature
nitpicky = True  # every cross-reference must resolve (with -W: or the build fails)
# types of other libraries: no inventories are fetched (the build is offline)
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(jax|jnp|np|numpy|flax|nnx|ml_dtypes|optax|argparse|pathlib|os|collections|"
        r"matplotlib|typing|dataclasses|sentencepiece|ipywidgets)"
        r"(\..*)?",
    ),
    (
        r"py:.*",
        r"(Array|ArrayLike|Mesh|AbstractMesh|NamedSharding|PartitionSpec|P|Module|Rngs|"
        r"State|Variable|Figure|Path|PathLike|BinaryIO|Iterator|Callable|Sequence|Any|"
        r"ndarray|dtype|DTypeLike)",
    ),
]

html_theme = "sphinx_book_theme"
html_title = "grok_flax"
html_favicon = "_static/favicon.svg"
html_extra_path = ["_extra"]  # index.html at the site's root: the landing page
html_theme_options = {"show_toc_level": 2, "use_download_button": False}
# unset, the theme logs "invalid theme mode" in the browser console
html_context = {"default_mode": "light"}


# --- the module → notebook map (docs/architecture.md), and what is generated from it ----------

GROUPS = [
    ("The model", "the components at the top of grok_flax/, one notebook each", ""),
    ("Scale", "meshes, placement on them, several processes", "scale/"),
    ("Checkpoints", "the released files in and out", "checkpoint/"),
    ("Running", "text in, text out; the compiled steps; the memory plan", "running/"),
    ("The demo model", "the bundled small model: corpus, training, evaluation", "demo/"),
    ("The course", "the checkers of the notebooks' exercises", "course/"),
    ("Figures and the command line", "", "viz|__main__"),
]


@functools.cache  # read once per build: every page asks
def module_map() -> list[dict]:
    """Rows of architecture.md's table: file, dotted module, what it is, notebook docnames."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## Module → notebook")[1]
    rows = []
    for line in table.splitlines():
        m = re.match(r"\| `([\w/]+\.py)` \| (.*?) \| (.*) \|$", line)
        if not m:
            continue
        path, what, where = m.groups()
        dotted = "grok_flax." + path.removesuffix(".py").replace("/", ".")
        dotted = dotted.removesuffix(".__init__")
        notebooks = re.findall(r"\(\.\./(notebooks/[\w]+)\.ipynb\)", where)
        rows.append(
            dict(
                path=path,
                module=dotted,
                what=what,
                notebooks=notebooks,
                slug=dotted.removeprefix("grok_flax.").replace(".", "-"),
            )
        )
    return rows


def _group_of(row) -> int:
    for i, (_, _, prefix) in enumerate(GROUPS):
        if prefix and re.match(prefix, row["path"]):
            return i
    return 0


@functools.cache
def _notebook_title(docname: str) -> str:
    nb = json.loads((ROOT / f"{docname}.ipynb").read_text())
    first = "".join(nb["cells"][0]["source"]).splitlines()[0]
    return first.lstrip("# ").strip()


def write_api_pages(app) -> None:
    """docs/api/: one page per module (autodoc of its docstrings, a link back to the
    notebooks that teach it) and an index grouped by role. Written only when changed."""
    out = ROOT / "docs" / "api"
    out.mkdir(exist_ok=True)
    rows = module_map()
    pages = {}
    for row in rows:
        taught = ", ".join(f"[{_notebook_title(nb)}](../../{nb}.ipynb)" for nb in row["notebooks"])
        lines = [f"# `{row['module']}`", "", f"{row['what']}.", ""]
        if taught:
            lines += [f"Taught in {taught}.", ""]
        # autodoc writes reStructuredText: it is parsed as such, not as Markdown
        lines += [
            "```{eval-rst}",
            f".. automodule:: {row['module']}",
            "   :members:",
            "   :special-members: __call__",
            "```",
            "",
        ]
        pages[f"{row['slug']}.md"] = "\n".join(lines)
    index = [
        "# API reference",
        "",
        "Generated from the docstrings of every module; each page links back to the "
        "notebook that builds it and to its source (`[source]`).",
        "",
    ]
    for i, (title, what, _) in enumerate(GROUPS):
        members = [r for r in rows if _group_of(r) == i]
        index += [f"## {title}", "", *([what[0].upper() + what[1:] + ".", ""] if what else [])]
        index += [f"- [`{r['module']}`]({r['slug']}.md) — {r['what']}" for r in members]
        index += ["", "```{toctree}", ":hidden:", "", *(r["slug"] for r in members), "```", ""]
    pages["index.md"] = "\n".join(index)
    for name, text in pages.items():
        path = out / name
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    for stale in set(p.name for p in out.glob("*.md")) - set(pages):
        (out / stale).unlink()


def write_architecture_figure(app) -> None:
    """docs/_generated/architecture.png: Grok-1 drawn from its config by ``viz.architecture``
    (the figure of notebooks 01 and 06), for the landing page."""
    out = ROOT / "docs" / "_generated" / "architecture.png"
    out.parent.mkdir(exist_ok=True)
    from grok_flax import GrokConfig, viz

    fig = viz.architecture(GrokConfig.grok_1())
    fig.savefig(out, dpi=110, bbox_inches="tight")


WIDGET = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = (
    "*Here JupyterLab shows the live widget (`make lab`); a web page has no kernel to "
    "run it. Its static copy follows.*"
)


def prepare_notebook_page(app, docname: str, source: list[str]) -> None:
    """What a notebook's page adds to, or leaves out of, the committed notebook (which is not
    changed): a box after the title linking the API pages of the modules it builds; and in
    place of an interactive widget, a note (a widget needs a running kernel, and its
    JavaScript would come from a CDN)."""
    if not docname.startswith("notebooks/"):
        return
    nb = json.loads(source[0])
    modules = [r for r in module_map() if docname in r["notebooks"]]
    if modules:
        links = ", ".join(f"[`{r['module']}`](../docs/api/{r['slug']}.md)" for r in modules)
        box = (
            f":::{{admonition}} In the library\n:class: tip\n\nThis notebook builds {links}: "
            f"their API pages list every class and function, with a link to the source.\n"
            f":::\n"
        )
        cell = {"cell_type": "markdown", "id": "in-the-library", "metadata": {}, "source": box}
        nb["cells"].insert(1, cell)
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if WIDGET in out.get("data", {}):
                out["data"] = {"text/markdown": WIDGET_NOTE}
    nb["metadata"].pop("widgets", None)
    source[0] = json.dumps(nb)


def setup(app):
    app.connect("builder-inited", write_api_pages)
    app.connect("builder-inited", write_architecture_figure)
    app.connect("source-read", prepare_notebook_page)
