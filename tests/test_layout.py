"""The shape of the code: no import cycle in `rnnlab/` (function-level imports included), no
module in `rnnlab/` or `experiments/` over 400 lines."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 400


def _modules(package: str) -> dict:
    """{dotted module name: path} of every .py file below ROOT/package."""
    out = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, package)):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].split(os.sep)
                out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(dirpath, f)
    return out


def import_graph(package: str = "rnnlab") -> dict:
    """{module: set of modules of `package` it imports}: `from a.b import c` counts as an
    import of a.b.c when that is a module, else of a.b (a package's implicit __init__ run is
    not an edge, or every registry package would be a cycle)."""
    mods = _modules(package)
    graph = {}
    for name, path in mods.items():
        with open(path) as f:
            tree = ast.parse(f.read())
        is_pkg = path.endswith("__init__.py")
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in mods}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = name.split(".")[: len(name.split(".")) - node.level + is_pkg]
                    base = ".".join(parts + ([base] if base else []))
                for a in node.names:
                    target = f"{base}.{a.name}"
                    if target in mods:
                        edges.add(target)
                    elif base in mods:
                        edges.add(base)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict) -> list:
    """One import cycle as [a, b, ..., a], or [] when the graph has none."""
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycle_in_rnnlab():
    graph = import_graph("rnnlab")
    assert "rnnlab.train.loop" in graph and "rnnlab.tasks.base" in graph["rnnlab.tasks.lm"]
    cycle = find_cycle(graph)
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize("package", ["rnnlab", "experiments"])
def test_no_module_over_400_lines(package):
    long = {name: n for name, path in _modules(package).items()
            if (n := sum(1 for _ in open(path))) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _readme_block(header: str) -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    start = text.index(f"```python\n{header}\n") + len(f"```python\n{header}\n")
    return text[start:text.index("```", start)]


def test_readme_task_family_example_trains(tmp_path, monkeypatch):
    """The README's "Adding a task family" files, as they stand there: registered by importing
    the config, validated, trained with gradient-flow diagnostics, evaluated."""
    import importlib.util
    import sys

    from rnnlab.tasks import TASKS
    from rnnlab.train import train_and_evaluate, validate
    from rnnlab.train.metrics import read_metrics

    def load(name, source):
        path = tmp_path / (name.rsplit(".", 1)[-1] + ".py")
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    task_src, config_src = (_readme_block("# rnnlab/tasks/parity.py"),
                            _readme_block("# experiments/configs/parity.py"))
    assert len(task_src.splitlines()) <= 50 and len(config_src.splitlines()) <= 12
    monkeypatch.setitem(TASKS, "parity", None)  # the registration is undone after the test
    load("rnnlab.tasks.parity", task_src)
    config = load("parity_config", config_src).get_config("smoke")
    config.checkpoint.async_save, config.diagnostics.every = False, 3
    validate(config)
    result = train_and_evaluate(config, str(tmp_path / "run"))
    records = read_metrics(str(tmp_path / "run"))
    assert int(result.state.step) == 6 and 0.0 <= result.eval_metrics["accuracy"] <= 1.0
    assert [r["step"] for r in records if r["split"] == "eval"] == [3, 6]
    assert [r["step"] for r in records if r["split"] == "gradient_flow"] == [0, 3, 6]
