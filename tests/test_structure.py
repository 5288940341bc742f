"""The package's structure: no import cycle, and each option list declared once."""
import ast
from pathlib import Path

import pytest

from aevb.config import CHOICES

PACKAGE = Path(__file__).resolve().parent.parent / "aevb"


def modules():
    """{dotted module name: path} of every module of the package."""
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imported(mods, name, path):
    """Modules of the package that ``name`` imports anywhere in its source (functions included),
    with the packages above each (importing a.b.c runs a/__init__ and a/b/__init__)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        for t in targets:
            parts = t.split(".")
            for i in range(1, len(parts) + 1):
                above = ".".join(parts[:i])
                if above in mods and above != name and not name.startswith(above + "."):
                    found.add(above)
    return found


def test_the_package_has_no_import_cycle():
    mods = modules()
    graph = {m: imported(mods, m, p) for m, p in mods.items()}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The check above can fail: two modules importing each other inside functions are found."""
    (tmp_path / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "b.py").write_text("from .a import f\n")
    mods = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py"}
    assert imported(mods, "pkg.a", mods["pkg.a"]) == {"pkg.b"}
    assert imported(mods, "pkg.b", mods["pkg.b"]) == {"pkg.a"}


def literal_string_sets(tree):
    """(line, set of strings) of every tuple, list or set literal of two or more strings, and of
    the string keys of every dict literal."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict):
            items = [k for k in node.keys if k is not None]
        else:
            continue
        strings = {e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        if len(strings) >= 2:
            yield node.lineno, strings


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_each_option_list_is_declared_once(key):
    """Validation, --help choices and construction derive an option's valid values from one
    declaration: no other literal in the package lists two or more of them together."""
    values = {v for v in CHOICES[key] if isinstance(v, str)}
    places = []
    for name, path in sorted(modules().items()):
        for line, strings in literal_string_sets(ast.parse(path.read_text())):
            if len(strings & values) >= 2:
                places.append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    assert len(places) == 1, f"{key} ({', '.join(sorted(values))}) is declared in {len(places)} places: {places}"


def test_the_benchmarks_import_names_that_exist():
    """The benchmarks and examples are not run by the tests; every aevb name they import (at the top or
    inside functions) must still exist, so that a moved function cannot break them unseen."""
    import importlib

    missing = []
    scripts = sorted((PACKAGE.parent / "benchmarks").glob("*.py")) + sorted((PACKAGE.parent / "examples").glob("*.py"))
    for path in scripts:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aevb"):
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name)
                            and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert not missing, missing


def documented_layers():
    """{top-level module or package name: layer} from the layer table of docs/architecture.md."""
    import re

    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    layers = {}
    for number, names in re.findall(r"^\| (\d) \| ([^|]+) \|", page, re.M):
        for name in re.findall(r"`(_*[a-z_]+)(?:/|\.py)`", names):
            layers[name] = int(number)
    return layers


def test_no_module_imports_from_a_layer_above_its_own():
    """docs/architecture.md's layers are what the code does: every module of the package is in
    a layer, and imports only from its own layer or those below."""
    layers = documented_layers()
    mods = modules()
    layer_of = {m: layers.get(m.split(".")[1]) for m in mods if m != "aevb"}
    unplaced = sorted(m for m, n in layer_of.items() if n is None and m != "aevb.__main__")
    assert not unplaced, f"modules in no layer of docs/architecture.md: {unplaced}"
    upward = [f"{m} (layer {layer_of[m]}) imports {t} (layer {layer_of[t]})"
              for m, p in mods.items() if layer_of.get(m) is not None
              for t in imported(mods, m, p) if layer_of.get(t) is not None and layer_of[t] > layer_of[m]]
    assert not upward, upward
