"""The folder tree is the architecture: the core (the model's components at the top of
grok_flax/) imports only the core, the role folders never import each other in a circle, and
docs/architecture.md maps every module that exists.

The imports are read from the source (ast), so a lazy import inside a function counts too."""

import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "grok_flax"
CORE = {
    "config",
    "rope",
    "norm",
    "quant",
    "attention",
    "kv_memory",
    "router",
    "moe",
    "layer",
    "model",
    "axes",
    "inputs",
}
ROLES = {"checkpoint", "running", "scale", "demo", "viz", "course"}
TOP = {"__init__", "__main__"}  # the facade and the command line: they may import anything


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(module: str, source: str) -> set[str]:
    """The grok_flax modules ``module`` imports, anywhere in its source. ``from grok_flax
    import x`` is the submodule ``grok_flax.x`` when there is one, else the facade."""
    found = set()
    is_package = (PACKAGE / Path(*module.split(".")[1:]) / "__init__.py").is_file()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "grok_flax"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            if base.split(".")[0] != "grok_flax":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                rel = Path(*sub.split(".")[1:])
                if (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel).is_dir():
                    found.add(sub)
                else:
                    found.add(base)
    return found


def _unit(module: str) -> str:
    """The part of the architecture a module belongs to: 'core', a role folder, or 'top'."""
    parts = module.split(".")
    if len(parts) == 1:
        return "top"  # grok_flax itself: the facade
    name = parts[1]
    if name in CORE:
        return "core"
    if name in ROLES:
        return name
    if name in TOP:
        return "top"
    raise AssertionError(f"{module} is neither core, a role folder, nor the top")


def import_graph(sources: dict[str, str] | None = None) -> dict[str, set[str]]:
    """module -> the grok_flax modules it imports (``sources`` overrides files' text)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        text = (sources or {}).get(name, path.read_text())
        graph[name] = _imports(name, text)
    return graph


def layering_problems(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks the architecture: the core importing anything outside the
    core, a module importing the facade, and each cycle between role folders."""
    problems = []
    units: dict[str, set[str]] = {}
    for module, deps in graph.items():
        unit = _unit(module)
        for dep in deps:
            dep_unit = _unit(dep)
            if unit == "core" and dep_unit != "core":
                problems.append(f"core module {module} imports {dep} ({dep_unit})")
            if dep == "grok_flax" and unit != "top":
                problems.append(f"{module} imports the facade grok_flax (it imports everything)")
            if dep_unit != unit:
                units.setdefault(unit, set()).add(dep_unit)
    # cycles between units: a depth-first search over the unit graph
    state: dict[str, int] = {}

    def visit(u, path):
        state[u] = 1
        for v in sorted(units.get(u, ())):
            if state.get(v) == 1:
                problems.append("cycle between folders: " + " -> ".join(path + [u, v]))
            elif v not in state:
                visit(v, path + [u])
        state[u] = 2

    for u in sorted(units):
        if u not in state:
            visit(u, [])
    return problems


def test_the_core_imports_only_the_core_and_folders_have_no_cycle():
    graph = import_graph()
    assert not layering_problems(graph)
    assert graph["grok_flax.model"] >= {"grok_flax.axes", "grok_flax.layer"}  # read at all


def test_the_import_check_catches_a_role_folder_in_the_core():
    """The check is not vacuous: a core layer importing scale/, a cycle between running/ and
    scale/, and a core module importing the facade are each reported."""
    layer = (PACKAGE / "layer.py").read_text()
    injected = layer.replace(
        "from grok_flax.norm import",
        "from grok_flax.scale import sharding\nfrom grok_flax.norm import",
        1,
    )
    problems = layering_problems(import_graph({"grok_flax.layer": injected}))
    assert any("core module grok_flax.layer imports grok_flax.scale" in p for p in problems)
    mesh = (PACKAGE / "scale" / "mesh.py").read_text() + "\nfrom grok_flax.running import plan\n"
    problems = layering_problems(import_graph({"grok_flax.scale.mesh": mesh}))
    assert any(p.startswith("cycle between folders") and "running" in p for p in problems)
    rope = (PACKAGE / "rope.py").read_text() + "\nimport grok_flax\n"
    problems = layering_problems(import_graph({"grok_flax.rope": rope}))
    assert any("imports the facade" in p for p in problems)


def test_architecture_doc_maps_every_module_to_what_exists():
    """docs/architecture.md names every module of the package, and every notebook or doc it
    links to exists; the model's components sit at the top, the rest in role folders."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    modules = sorted(
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" or p.parent.name in ("demo", "course")
    )
    missing = [m for m in modules if f"`{m}`" not in doc]
    assert not missing, f"docs/architecture.md does not map {missing}"
    for link in re.findall(r"\]\(([^)#]+)\)", doc):
        assert (ROOT / "docs" / link).resolve().exists(), link
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == CORE | TOP, top
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == ROLES


def test_the_architecture_diagram_has_no_arrow_running_back_up():
    """The layer diagram of docs/architecture.md lists the units from the bottom up; each
    unit's imports must all lie below it — the same graph the import test reads."""
    doc = (ROOT / "docs" / "architecture.md").read_text()
    section = doc.split("## Layers")[1].split("\n## ")[0]
    order = re.findall(r"^\s*\d+\.\s+\*\*(\w+)\*\*", section, re.M)  # "1. **core** ..."
    assert set(order) == {"core", "top"} | ROLES, order
    rank = {u: i for i, u in enumerate(order)}
    for module, deps in import_graph().items():
        for dep in deps:
            assert rank[_unit(dep)] <= rank[_unit(module)], (module, dep)
