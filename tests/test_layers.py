"""The project's layering, read from the source with `ast` (nothing is imported):

- the runtime (`engine/`, i.e. cvmatte.engine) imports nothing of the toolchain (cvmatte.export,
  cvmatte.distill, cvmatte.benchmarks) nor of the front door (the `cvmatte` package itself,
  cvmatte.api, cvmatte.cli, cvmatte.server), not even inside a function;
- the project's modules import each other without a cycle.

Every import statement counts, wherever it is (module level, inside functions, under
TYPE_CHECKING): a lazy import hides a dependency from `import`, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: pyproject.toml's package-dir for the top-level folders (subfolders follow their parent).
PACKAGE_DIR = {
    "cvmatte": "cvmatte",
    "engine": "cvmatte.engine",
    "export": "cvmatte.export",
    "distill": "cvmatte.distill",
    "benchmarks": "cvmatte.benchmarks",
}

RUNTIME = "cvmatte.engine"
#: What the runtime must not import: the toolchain and the front door.
FORBIDDEN_FOR_RUNTIME = (
    "cvmatte.export",
    "cvmatte.distill",
    "cvmatte.benchmarks",
    "cvmatte.api",
    "cvmatte.cli",
    "cvmatte.server",
    "cvmatte.__main__",
)


def _package_dir() -> dict[str, str]:
    """The folder -> package mapping from pyproject.toml where tomllib can read it."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return dict(PACKAGE_DIR)
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = cfg.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    folders = {folder: pkg for pkg, folder in mapping.items() if folder.split("/")[0] in PACKAGE_DIR}
    return folders or dict(PACKAGE_DIR)


def _module_name(path: Path, package_dir: dict[str, str]) -> str:
    rel = path.relative_to(ROOT)
    parts = list(rel.with_suffix("").parts)
    # The longest mapped folder that holds the file; the rest of the path follows it.
    for depth in range(len(parts) - 1, 0, -1):
        folder = "/".join(parts[:depth])
        if folder in package_dir:
            name = package_dir[folder].split(".") + parts[depth:]
            break
    else:
        raise AssertionError(f"{rel} is in no mapped folder")
    if name[-1] == "__init__":
        name = name[:-1]
    return ".".join(name)


def project_modules() -> dict[str, Path]:
    """Module name -> file, for every .py under the mapped top-level folders (a folder of modules
    without an __init__.py, a namespace package, maps to the folder itself)."""
    package_dir = _package_dir()
    modules = {}
    for top in PACKAGE_DIR:
        for path in sorted((ROOT / top).rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            modules[_module_name(path, package_dir)] = path
            if path.parent != ROOT / top and not (path.parent / "__init__.py").is_file():
                modules.setdefault(_module_name(path.parent / "__init__.py", package_dir), path.parent)
    return modules


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _inside(name: str, modules: dict[str, Path]) -> str | None:
    """`name` if it is a project module, else its longest prefix that is; None outside the project."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def import_edges(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported project module: line of the first import}. `from pkg import name` is an
    edge to pkg.name when that is a module, else to pkg; the parent packages that Python imports
    implicitly on the way are not edges."""
    edges: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py" or path.is_dir()
        out: dict[str, int] = {}
        edges[module] = out
        if path.is_dir():
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = _resolve_relative(module, is_package, node.level, node.module)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                hit = _inside(target, modules)
                if hit is not None and hit != module:
                    out.setdefault(hit, node.lineno)
    return edges


def _is_forbidden_for_runtime(target: str) -> bool:
    if target == "cvmatte":
        return True
    return any(target == f or target.startswith(f + ".") for f in FORBIDDEN_FOR_RUNTIME)


def _in_runtime(module: str) -> bool:
    return module == RUNTIME or module.startswith(RUNTIME + ".")


def find_cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Cycle paths (first module repeated at the end): in each strongly connected component (Tarjan's
    algorithm, iterative), a shortest cycle through each of its modules, without repeats."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, {}))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in edges.get(node, {}):
                        components.append(sorted(component))
    cycles: list[list[str]] = []
    for component in components:
        for start in component:
            cycle = _cycle_through(start, set(component), edges)[:-1]
            first = cycle.index(min(cycle))
            cycle = cycle[first:] + cycle[:first]
            if cycle + cycle[:1] not in cycles:
                cycles.append(cycle + cycle[:1])
    return cycles


def _cycle_through(start: str, members: set[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """A shortest cycle from `start` back to it inside its component (breadth-first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges.get(node, {})):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(members)}")


def _describe(cycle: list[str], edges: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        where = modules[a].relative_to(ROOT)
        steps.append(f"{a} -> {b} ({where}:{edges[a][b]})")
    return "\n    ".join(steps)


def test_the_mapping_finds_the_project():
    modules = project_modules()
    for name in ("cvmatte", "cvmatte.api", "cvmatte.engine", "cvmatte.engine.zoo", "cvmatte.engine.backends",
                 "cvmatte.engine.backends.base", "cvmatte.export", "cvmatte.distill", "cvmatte.benchmarks"):
        assert name in modules, name


def test_relative_imports_resolve_as_python_does():
    assert _resolve_relative("cvmatte.engine.zoo", False, 1, "spec") == "cvmatte.engine.spec"
    assert _resolve_relative("cvmatte.engine.backends.base", False, 2, "zoo") == "cvmatte.engine.zoo"
    assert _resolve_relative("cvmatte.engine.backends", True, 1, "base") == "cvmatte.engine.backends.base"
    assert _resolve_relative("cvmatte.engine.backends", True, 2, None) == "cvmatte.engine"
    assert _resolve_relative("cvmatte.cli", False, 1, None) == "cvmatte"


def test_cycle_finder_reports_the_path():
    edges = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}, "e": {"e": 1}}
    assert sorted(find_cycles(edges)) == [["a", "b", "c", "a"], ["e", "e"]]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


def test_runtime_imports_no_toolchain_nor_front_door():
    modules = project_modules()
    edges = import_edges(modules)
    bad = [
        f"{modules[m].relative_to(ROOT)}:{line}: {m} imports {target}"
        for m in sorted(edges) if _in_runtime(m)
        for target, line in sorted(edges[m].items(), key=lambda kv: kv[1])
        if _is_forbidden_for_runtime(target)
    ]
    assert not bad, "the runtime (engine/) must not import the toolchain or the front door:\n  " + "\n  ".join(bad)


def test_no_import_cycles():
    modules = project_modules()
    edges = import_edges(modules)
    cycles = find_cycles(edges)
    assert not cycles, "import cycles:\n  " + "\n  ".join(
        " -> ".join(c) + "\n    " + _describe(c, edges, modules) for c in cycles)
