"""The project's import graph, read with ``ast`` (function-level imports included): no cycle between modules or
between the engine's packages, dependencies one way (engine <- shared Logic <- module Logic), and deferred
imports only where they buy something (see ``Testing/import_graph.py``)."""

from __future__ import annotations

import pytest

import import_graph as graph

MAX_DEFERRED_LIGHT_IMPORTS = 0
"""Function-level imports of project modules that load no lazy package, outside the command modules and the
Slicer module scripts: none. A light module is imported at module level; ``python -c "import import_graph as g;
print(*g.deferred_light_imports(g.all_imports()), sep=chr(10))"`` in Testing/ lists any that creep in."""
MAX_FUNCTION_LEVEL_IMPORTS = 259
"""All function-level imports of project modules (measured 2026-12-05 with the learning-curve command; most of them
in the command modules; 2026-12-06: +3 for the transplants, in two command modules and the donor's scan-cut check,
which loads the CT analysis only when transplants are made)."""


@pytest.fixture(scope="module")
def edges():
    return graph.all_imports()


def test_the_graph_sees_the_whole_project(edges):
    modules = graph.project_modules()
    assert {
        "bmdgan.registration.pipeline",
        "BMDGANLib.widget_base",
        "BMDGANRegistrationLib.curation_logic",
        "BMDGANTrainingLib.training_logic",
        "BMDGAN",
    } <= set(modules)
    assert len(modules) > 140 and len(edges) > 400
    assert any(edge.in_function for edge in edges) and any(not edge.in_function for edge in edges)


def test_the_cycle_finder_reports_a_cycle_through_a_function_level_import():
    made_up = [
        graph.Import("a", "b", 1, False),
        graph.Import("b", "c", 1, False),
        graph.Import("c", "a", 9, True),
        graph.Import("c", "d", 2, False),
    ]
    assert graph.cycles(made_up) == [["a", "b", "c", "a"]]
    assert graph.cycles(made_up[:2] + made_up[3:]) == []


def test_no_import_cycle_between_modules(edges):
    found = graph.cycles(edges)
    assert found == [], "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_no_cycle_between_the_engines_packages(edges):
    packages = [
        graph.Import(graph.package_of(e.source), graph.package_of(e.target), e.line, e.in_function)
        for e in edges
        if graph.package_of(e.source) != graph.package_of(e.target)
    ]
    found = graph.cycles(packages)
    assert found == [], "package cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_dependencies_run_one_way_from_the_modules_to_the_engine(edges):
    def top(module: str) -> str:
        return module.split(".")[0]

    wrong = [e for e in edges if top(e.source) == "bmdgan" and top(e.target) != "bmdgan"]
    wrong += [e for e in edges if top(e.source) == "BMDGANLib" and top(e.target) not in ("bmdgan", "BMDGANLib")]
    wrong += [
        e
        for e in edges
        if top(e.source).endswith("Lib") and top(e.target) in ("BMDGAN", "BMDGANRegistration", "BMDGANTraining")
    ]
    assert wrong == []


def test_deferred_imports_stay_within_their_ceilings(edges):
    deferred = graph.deferred_light_imports(edges)
    assert len(deferred) <= MAX_DEFERRED_LIGHT_IMPORTS, "\n".join(map(str, deferred))
    assert sum(edge.in_function for edge in edges) <= MAX_FUNCTION_LEVEL_IMPORTS
    # The shared and module Logic import their light engine modules at module level.
    assert [e for e in deferred if e.source.split(".")[0].endswith("Lib")] == []


def test_the_architecture_document_shows_the_current_package_graph(edges):
    document = (graph.REPOSITORY / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert graph.with_table(document, graph.markdown_table(edges)) == document, (
        "docs/architecture.md is stale: run python Testing/import_graph.py --write docs/architecture.md"
    )


def test_lazy_packages_come_from_the_requirements():
    lazy = graph.lazy_packages()
    assert {"torch", "SimpleITK", "scipy", "matplotlib", "PIL", "yaml", "tqdm", "slicer", "qt"} <= lazy
    assert "numpy" not in lazy


FOLDER_FILES = {
    "run.json": "bmdgan/training/run_folder.py",
    "history.jsonl": "bmdgan/training/run_folder.py",
    "metrics.json": "bmdgan/evaluation/evaluation_folder.py",
    "predictions.csv": "bmdgan/evaluation/evaluation_folder.py",
}


def test_each_folder_file_is_named_in_code_by_its_owner_only():
    """One owner per folder format (issue 19): no other engine or Slicer module has a run or evaluation file's name
    as a string of its own (as in ``folder / "run.json"``; help texts and docstrings may mention it), so each is
    read and written in one place."""
    import ast

    offenders = []
    for path in sorted(graph.REPOSITORY.glob("BMDGAN*/**/*.py")):
        relative = path.relative_to(graph.REPOSITORY).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for name, owner in FOLDER_FILES.items():
                    if node.value == name and not relative.endswith(owner):
                        offenders.append(f"{relative}:{node.lineno} {name}")
    assert offenders == []
