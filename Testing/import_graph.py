"""The import graph between the project's own modules, read from the source with ``ast`` (nothing is imported).

Every ``import`` statement counts, also those inside functions (a function-level import still runs, so it can
still close a cycle); only imports under ``if TYPE_CHECKING:`` are skipped. An import names the most specific
project module it reaches (``from bmdgan.ct import grid`` -> ``bmdgan.ct.grid``); parent packages are not
added, as import-linter and pydeps do.

Used by ``Testing/engine/test_import_graph.py`` and, as a script, to print the package dependency table of
``docs/architecture.md`` (``python Testing/import_graph.py``) or to write it there between its markers
(``python Testing/import_graph.py --write docs/architecture.md``).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
# Import roots (folders put on sys.path) and the top-level packages or modules they hold.
ROOTS = {
    REPOSITORY / "BMDGAN": ("bmdgan", "BMDGANLib", "BMDGAN"),
    REPOSITORY / "BMDGANRegistration": ("BMDGANRegistrationLib", "BMDGANRegistration"),
    REPOSITORY / "BMDGANTraining": ("BMDGANTrainingLib", "BMDGANTraining"),
}


REQUIREMENTS = REPOSITORY / "BMDGAN" / "bmdgan" / "resources" / "requirements.txt"
IMPORT_NAMES = {"pillow": "PIL", "pyyaml": "yaml"}
"""Distribution -> import name, where they differ."""
SLICER_ONLY = ("slicer", "qt", "vtk", "ctk", "PyTorchUtils")
"""Present only in Slicer's Python (slicer-core provides a part of ``slicer`` and ``vtk`` for the tests)."""
ALWAYS_PRESENT = ("numpy",)
"""Loaded by Slicer and by every engine command anyway: importing it costs nothing extra."""
LAZY_REASON = (
    "a package of requirements.txt may be missing in Slicer until the first-use installer ran, "
    "and the big ones (torch, SimpleITK, scipy, matplotlib) take 0.1-2 s to import"
)


def lazy_packages() -> set[str]:
    """Third-party top-level packages that may be imported inside functions: the engine's requirements (but
    numpy) and the Slicer-only packages."""
    names = set(SLICER_ONLY)
    for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            distribution = requirement.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip()
            names.add(IMPORT_NAMES.get(distribution.lower(), distribution))
    return names - set(ALWAYS_PRESENT)


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported project module
    line: int
    in_function: bool


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for the engine, the Logic packages and the module scripts."""
    modules = {}
    for root, names in ROOTS.items():
        for name in names:
            single = root / f"{name}.py"
            if single.is_file():
                modules[name] = single
                continue
            for path in sorted((root / name).rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                dotted = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                modules[dotted] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST):
    """(import statement, inside a function?) for every import that runs, skipping ``if TYPE_CHECKING`` bodies."""
    stack = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, in_function
        children = ast.iter_child_nodes(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children = node.orelse
        inside = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        stack.extend((child, inside) for child in children)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a project module (None: not ours)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for statement, in_function in _statements(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(statement, ast.Import):
            names = [alias.name for alias in statement.names]
        else:
            if statement.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - statement.level + 1]
                base = ".".join(base_parts + ([statement.module] if statement.module else []))
            else:
                base = statement.module
            names = [f"{base}.{alias.name}" for alias in statement.names]
        for name in names:
            target = _resolve(name, modules)
            edge = Import(module, target, statement.lineno, in_function)
            if target is not None and target != module and edge not in found:
                found.append(edge)
    return found


def third_party_at_module_level(path: Path) -> set[str]:
    """Top-level names of the absolute, non-project imports that run when the module is imported."""
    names = set()
    for statement, in_function in _statements(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if in_function:
            continue
        if isinstance(statement, ast.Import):
            names.update(alias.name.split(".")[0] for alias in statement.names)
        elif statement.level == 0 and statement.module:
            names.add(statement.module.split(".")[0])
    return names


def lazy_loaders(edges: list[Import]) -> dict[str, set[str]]:
    """Project module -> the lazy packages (:func:`lazy_packages`) that importing it loads, through its own
    module-level imports, its parent packages' and those of the project modules it imports at module level."""
    modules, lazy = project_modules(), lazy_packages()
    direct = {module: third_party_at_module_level(path) & lazy for module, path in modules.items()}
    imported = defaultdict(set)
    for edge in edges:
        if not edge.in_function:
            imported[edge.source].add(edge.target)
    for module in modules:  # importing a.b.c runs a/__init__ and a/b/__init__ first
        parts = module.split(".")
        parents = (".".join(parts[:end]) for end in range(1, len(parts)))
        imported[module].update(parent for parent in parents if parent in modules)
    loads = {}
    for module in modules:
        seen, pending, found = {module}, [module], set()
        while pending:
            current = pending.pop()
            found |= direct.get(current, set())
            for target in imported[current] - seen:
                seen.add(target)
                pending.append(target)
        loads[module] = found
    return loads


def deferred_light_imports(edges: list[Import]) -> list[Import]:
    """Function-level imports of project modules that load no lazy package: they could sit at module level.
    The command modules (``bmdgan.cli``: ``bmdgan --help`` must stay fast) and the Slicer module scripts (Slicer
    imports them all at start-up) defer on purpose and are left out."""
    loads = lazy_loaders(edges)
    scripts = {name for names in ROOTS.values() for name in names if not name.endswith("Lib") and name != "bmdgan"}
    return [
        edge
        for edge in edges
        if edge.in_function
        and not loads[edge.target]
        and not edge.source.startswith("bmdgan.cli.")
        and edge.source not in scripts
    ]


def all_imports() -> list[Import]:
    modules = project_modules()
    return [edge for module, path in modules.items() for edge in imports_of(module, path, modules)]


def cycles(edges: list[Import]) -> list[list[str]]:
    """One cycle (a list of modules, first repeated last) per strongly connected component (Tarjan)."""
    graph = defaultdict(set)
    for edge in edges:
        graph[edge.source].add(edge.target)
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    for node in sorted(list(graph)):
        if node not in index:
            visit(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first search back to it)."""
    start = min(component)
    parents, frontier = {start: None}, [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node] & component):
                if successor == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, node, start]
                if successor not in parents:
                    parents[successor] = node
                    following.append(successor)
        frontier = following
    return sorted(component)


def package_of(module: str) -> str:
    """The unit of docs/architecture.md's table: ``bmdgan.<package>`` or a flat ``bmdgan.<module>``; a Logic
    package or module script as itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "bmdgan" and len(parts) > 1 else parts[0]


def package_dependencies(edges: list[Import]) -> dict[str, set[str]]:
    dependencies = defaultdict(set)
    for edge in edges:
        source, target = package_of(edge.source), package_of(edge.target)
        if source != target:
            dependencies[source].add(target)
    return dependencies


def markdown_table(edges: list[Import]) -> str:
    dependencies = package_dependencies(edges)
    names = sorted({package_of(module) for module in project_modules()} - {"bmdgan"})
    lines = ["| package | imports (project packages) |", "|---|---|"]
    for name in names:
        used = sorted(dependencies.get(name, set()) - {"bmdgan"})
        lines.append(f"| `{name}` | {', '.join(f'`{u}`' for u in used) or '-'} |")
    return "\n".join(lines)


TABLE_START, TABLE_END = "<!-- import-table -->", "<!-- /import-table -->"


def with_table(document: str, table: str) -> str:
    """``document`` with the text between the table markers replaced by ``table``."""
    before, rest = document.split(TABLE_START, 1)
    _, after = rest.split(TABLE_END, 1)
    return f"{before}{TABLE_START}\n{table}\n{TABLE_END}{after}"


if __name__ == "__main__":
    table = markdown_table(all_imports())
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        path = Path(sys.argv[2])
        path.write_text(with_table(path.read_text(encoding="utf-8"), table), encoding="utf-8")
    else:
        print(table)
