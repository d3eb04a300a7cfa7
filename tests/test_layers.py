"""The project's layers, checked from the source: imports point one way.

- common/ (pure codecs) imports nothing of the project but other codecs;
- common/runtime/ (the shared I/O helpers) imports only common/;
- the daemons (nfspd, iod, unlinkd) import only common/ and themselves;
- tools/ imports anything but tests/, and the admin commands (installed) not
  the development harness tools/dev/ (which is not);
- no cycle between modules, counting imports inside functions too (a late
  import is no way around a cycle).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("common", "nfspd", "iod", "unlinkd", "tools")
PROJECT = PACKAGES + ("tests",)


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _modules()


def _imports(name, path):
    """The project modules ``name`` imports, anywhere in its body."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod when there is one.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            if t.split(".")[0] in PROJECT:
                out.add(t)
    out.discard(name)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module):
    top = module.split(".")[0]
    if module == "common.runtime" or module.startswith("common.runtime."):
        return "runtime"
    if module == "tools.dev" or module.startswith("tools.dev."):
        return "dev"
    return top


ALLOWED = {
    "common": {"common"},
    "runtime": {"common", "runtime"},
    "nfspd": {"common", "runtime", "nfspd"},
    "iod": {"common", "runtime", "iod"},
    "unlinkd": {"common", "runtime", "unlinkd"},
    "tools": {"common", "runtime", "nfspd", "iod", "unlinkd", "tools"},
    "dev": {"common", "runtime", "nfspd", "iod", "unlinkd", "tools", "dev"},
}


def test_every_import_points_down_the_layers():
    wrong = sorted(f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
                   if _layer(t) not in ALLOWED[_layer(m)])
    assert not wrong, "\n".join(wrong)


def _cycles():
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules():
    assert _cycles() == []


@pytest.mark.parametrize("package", PACKAGES)
def test_the_checker_sees_each_package(package):
    """Guards the two tests above against passing on an empty graph."""
    assert any(m.split(".")[0] == package and GRAPH[m] for m in GRAPH)


def test_the_checker_resolves_submodule_imports():
    assert "common.runtime.logs" in GRAPH["nfspd.cli"]
