"""Package structure: the modules of qrnn_lm import each other one way only."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "qrnn_lm"


def import_graph() -> dict:
    """module -> the qrnn_lm modules it imports anywhere (also inside functions)."""
    mods = {p.stem for p in PKG.glob("*.py")} - {"__init__", "__main__"}
    graph = {}
    for m in mods:
        deps = set()
        for node in ast.walk(ast.parse((PKG / f"{m}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                name = node.module or ""
                if node.level == 0 and not name.startswith("qrnn_lm"):
                    continue
                parts = name.split(".")[1:] if node.level == 0 else name.split(".") if name else []
                if parts and parts[0]:
                    deps.add(parts[0])
                else:  # from . import x / from qrnn_lm import x
                    deps.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name.split(".")[1] for a in node.names
                            if a.name.startswith("qrnn_lm."))
        graph[m] = sorted((deps & mods) - {m})
    return graph


def find_cycle(graph: dict):
    state, stack = {}, []

    def visit(u):
        state[u] = "open"
        stack.append(u)
        for v in graph[u]:
            if state.get(v) == "open":
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = visit(v)
                if found:
                    return found
        stack.pop()
        state[u] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_find_cycle_sees_one():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None


def test_import_graph_has_no_cycle():
    graph = import_graph()
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # the kernel loader knows nothing of the ops it loads
    assert graph["ops"] == ["_ext", "checks", "ops_reference"]
    assert graph["_ext"] == ["_build"] and graph["_build"] == []
