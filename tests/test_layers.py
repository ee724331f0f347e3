"""The layers show in the import graph: the modules directly in slm/ are the ground floor,
orchestration/ sits above stages/, eval/ and data_builders/, and launch/ on top. Every layer imports
as slm.<layer> (slm/__init__.py). Every import counts, the ones inside functions too."""

import ast
from collections import defaultdict

from slm import REPO_ROOT

PACKAGES = ("slm", "stages", "eval", "data_builders", "orchestration", "launch")
# What each package may import besides itself.
ALLOWED = {
    "slm": set(),
    "stages": {"slm"},
    "eval": {"slm"},
    "data_builders": {"slm"},
    "orchestration": {"slm", "stages", "eval", "data_builders"},
    "launch": {"slm", "stages", "eval", "data_builders", "orchestration"},
}


def module_name(path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts if parts[0] == "slm" else ("slm", *parts))


def layer(module: str) -> str:
    """slm.eval.bench → eval; slm.config → slm (the ground floor)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else "slm"


def project_imports(path) -> set[str]:
    """Project modules a file imports (absolute imports; the launchers' `_bootstrap` is local)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] == "slm"}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for pkg in PACKAGES for p in (REPO_ROOT / pkg).rglob("*.py")}
    edges = defaultdict(set)
    for name, path in modules.items():
        for target in project_imports(path):
            while target not in modules and "." in target:  # `from slm import layout` names slm.layout
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                edges[name].add(target)
    return {m: edges[m] for m in modules}


def test_no_package_imports_a_layer_above_it():
    upward = [
        f"{src} imports {dst}"
        for src, dsts in graph().items()
        for dst in dsts
        if (a := layer(src)) != (b := layer(dst)) and b not in ALLOWED[a]
    ]
    assert not upward, "\n".join(sorted(upward))


def test_slm_imports_no_sibling_package():
    assert all(layer(dst) == "slm" for src, dsts in graph().items() if layer(src) == "slm" for dst in dsts)


def test_the_module_graph_has_no_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" → ".join(path[path.index(nxt) :] + [nxt]) if nxt in path else f"{node} → {nxt}")
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_the_graph_sees_the_layers():
    """The walk finds real edges (a broken walker would pass the tests above vacuously)."""
    edges = graph()
    assert "slm.orchestration.training" in edges["slm.orchestration.stage"]
    assert "slm.stages" in edges["slm.orchestration.training"] and "slm.engine" in edges["slm.recipe"]
    assert len(edges) > 40 and sum(map(len, edges.values())) > 100
