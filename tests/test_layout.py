"""The layout a newcomer can read, held by static checks (ast; nothing imported
except where said):

- no module under qrnn_lm/ over 500 lines, no function over 80, no class over 250;
- no import cycle among qrnn_lm modules through module-level imports;
- benchmarks/bench_lm.py times the package's own training step
  (``train_step`` from ``qrnn_lm.train``), not a copy of it;
- benchmarks/ does not parse train.py's printed output with regular expressions
  (no ``re``/``regex``), it reads metrics.jsonl / results.json;
- README.md stays short.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = "qrnn_lm"
MAX_MODULE_LINES, MAX_FUNCTION_LINES, MAX_CLASS_LINES = 500, 80, 250
MAX_README_LINES = 180
# (path relative to the root, the stripped source line) -> why regular expressions are right there
RE_WHITELIST: dict = {
    ("benchmarks/bench_pipeline.py", "import re"): "builds synthetic Japanese text (kanji/kana spans), parses no output",
    ("benchmarks/bench_pipeline.py", '_KANJI_KANA = re.compile(r"[\\u3041-\\u30ff\\u4e00-\\u9fff]{2,6}")'):
        "builds synthetic Japanese text, parses no output",
}


def package_modules():
    """{dotted module name: path} of every .py file under qrnn_lm/."""
    mods = {}
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, PKG)):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                mods[".".join(parts)] = path
    return mods


def parse(path):
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read(), filename=path)


def test_package_has_modules():
    mods = package_modules()
    assert {PKG, f"{PKG}.ops", f"{PKG}.train"} <= set(mods), sorted(mods)


def test_module_function_and_class_sizes():
    too_big = []
    for name, path in package_modules().items():
        with open(path, encoding="utf-8") as f:
            n = len(f.read().splitlines())
        if n > MAX_MODULE_LINES:
            too_big.append(f"module {name}: {n} lines (max {MAX_MODULE_LINES})")
        for node in ast.walk(parse(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                size = node.end_lineno - node.lineno + 1
                kind, limit = (("class", MAX_CLASS_LINES) if isinstance(node, ast.ClassDef)
                               else ("function", MAX_FUNCTION_LINES))
                if size > limit:
                    too_big.append(f"{kind} {name}.{node.name} (line {node.lineno}): {size} lines (max {limit})")
    assert not too_big, "\n".join(too_big)


def module_level_imports(tree):
    """Import nodes executed when the module is imported: not inside functions,
    not under ``if TYPE_CHECKING:``."""
    out = []

    def visit(nodes):
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            else:
                visit(list(ast.iter_child_nodes(node)))
    visit(tree.body)
    return out


def import_graph(mods):
    """{module: {package modules it imports at import time}}."""
    graph = {}
    for name, path in mods.items():
        is_pkg = os.path.basename(path) == "__init__.py"
        edges = set()
        for node in module_level_imports(parse(path)):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods:
                        edges.add(alias.name)
            else:
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in mods:                 # from qrnn_lm import ops: the submodule
                        edges.add(sub)
                    elif target in mods:            # from qrnn_lm.x import name: module x
                        edges.add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One cycle as a list of nodes (first == last), or None."""
    state, stack = {}, []

    def dfs(u):
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                c = dfs(v)
                if c:
                    return c
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state:
            c = dfs(u)
            if c:
                return c
    return None


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    mods = {"p": "p/__init__.py", "p.x": "p/x.py", "p.y": "p/y.py"}
    trees = {"p/__init__.py": "from . import x\n", "p/x.py": "from .y import f\n",
             "p/y.py": "import os\ndef g():\n    from p import x\nfrom p.x import h\n"}
    real_parse = globals()["parse"]
    globals()["parse"] = lambda path: ast.parse(trees[path])
    try:
        graph = import_graph(mods)
    finally:
        globals()["parse"] = real_parse
    assert graph == {"p": {"p.x"}, "p.x": {"p.y"}, "p.y": {"p.x"}}
    assert find_cycle(graph) == ["p.x", "p.y", "p.x"]


def test_no_import_cycle_between_package_modules():
    mods = package_modules()
    cycle = find_cycle(import_graph(mods))
    assert cycle is None, "import cycle at import time: " + " -> ".join(cycle)


def test_bench_lm_times_the_package_training_step():
    tree = parse(os.path.join(ROOT, "benchmarks", "bench_lm.py"))
    imported = any(isinstance(n, ast.ImportFrom) and n.module == f"{PKG}.train"
                   and any(a.name == "train_step" for a in n.names) for n in ast.walk(tree))
    assert imported, "benchmarks/bench_lm.py should use `from qrnn_lm.train import train_step`"
    from qrnn_lm.train import train_step
    assert callable(train_step)


def benchmark_files():
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, "benchmarks")):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
    return out


def regex_uses(path):
    """[(line number, source line)] where ``re`` or ``regex`` is imported or used."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    hits = set()
    for node in ast.walk(parse(path)):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] in ("re", "regex") for a in node.names):
            hits.add(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("re", "regex"):
            hits.add(node.lineno)
        elif isinstance(node, ast.Name) and node.id in ("re", "regex"):
            hits.add(node.lineno)
    return [(n, lines[n - 1].strip()) for n in sorted(hits)]


def test_regex_finder_finds_regexes(tmp_path):
    p = tmp_path / "b.py"
    p.write_text("import resource\nimport re\nx = 're.compile'\ny = re.compile('a')\n", encoding="utf-8")
    assert [n for n, _ in regex_uses(str(p))] == [2, 4]


def test_benchmarks_do_not_parse_output_with_regexes():
    files = benchmark_files()
    assert any(f.endswith("bench_lm.py") for f in files)
    found = []
    for path in files:
        rel = os.path.relpath(path, ROOT)
        for n, line in regex_uses(path):
            if (rel, line) not in RE_WHITELIST:
                found.append(f"{rel}:{n}: {line}")
    assert not found, ("benchmarks read metrics.jsonl / results.json, not printed output:\n"
                       + "\n".join(found))


def test_readme_is_short():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        n = len(f.read().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}); move detail to docs/"

