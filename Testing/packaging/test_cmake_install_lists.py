"""Every file a packaged extension needs is listed in the CMake files (Slicer cannot be built here).

The CMake files are parsed: ``set(VAR ...)`` lists and ``file(GLOB_RECURSE VAR RELATIVE ... patterns)``
globs are expanded the way CMake expands them, and compared with the files in the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
MODULES = ("BMDGAN", "BMDGANRegistration", "BMDGANTraining")


def _commands(text: str) -> list[tuple[str, list[str]]]:
    text = re.sub(r"#[^\n]*", "", text)
    return [(name.lower(), arguments.split()) for name, arguments in re.findall(r"(\w+)\s*\(([^()]*)\)", text)]


def _expand(word: str, variables: dict[str, list[str]]) -> list[str]:
    match = re.fullmatch(r"\$\{(\w+)\}", word)
    if match:
        return variables.get(match.group(1), [])
    return [re.sub(r"\$\{(\w+)\}", lambda m: " ".join(variables.get(m.group(1), [])), word)]


def _glob_recurse(folder: Path, pattern: str) -> list[str]:
    directory, _, name_pattern = pattern.rpartition("/")
    return sorted(
        str(p.relative_to(folder)) for p in (folder / directory).rglob(name_pattern) if "__pycache__" not in p.parts
    )


def module_install_lists(module: str) -> tuple[set[str], set[str]]:
    """(scripts, resources) that slicerMacroBuildScriptedModule installs, relative to the module folder."""
    folder = REPOSITORY / module
    variables: dict[str, list[str]] = {}
    scripts: set[str] = set()
    resources: set[str] = set()
    for name, arguments in _commands((folder / "CMakeLists.txt").read_text()):
        if name == "set":
            variables[arguments[0]] = [w for a in arguments[1:] for w in _expand(a, variables)]
        elif name == "file" and arguments[0] == "GLOB_RECURSE":
            patterns = [
                a
                for a in arguments[2:]
                if a not in ("RELATIVE", "CONFIGURE_DEPENDS") and not a.startswith("${CMAKE_CURRENT_SOURCE_DIR}")
            ]
            variables[arguments[1]] = [f for pattern in patterns for f in _glob_recurse(folder, pattern)]
        elif name == "slicermacrobuildscriptedmodule":
            keyword = None
            for argument in arguments:
                if argument in ("NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS"):
                    keyword = argument
                elif keyword == "SCRIPTS":
                    scripts.update(_expand(argument, variables))
                elif keyword == "RESOURCES":
                    resources.update(_expand(argument, variables))
    return scripts, resources


def test_top_level_adds_every_module_and_has_metadata():
    text = (REPOSITORY / "CMakeLists.txt").read_text()
    for module in MODULES:
        assert f"add_subdirectory({module})" in text
    for field in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
    ):
        assert re.search(rf"set\({field} ", text), field
    assert 'set(EXTENSION_CATEGORY "Quantification")' in text
    assert "find_package(Slicer REQUIRED)" in text and "Slicer_EXTENSION_CPACK" in text
    assert (REPOSITORY / "Resources" / "Icons" / "BMDGAN.png").is_file()


@pytest.mark.parametrize("module", MODULES)
def test_every_module_file_is_installed(module):
    folder = REPOSITORY / module
    scripts, resources = module_install_lists(module)
    for listed in scripts | resources:
        assert (folder / listed).is_file(), f"{module}/CMakeLists.txt lists a missing file: {listed}"
    python_files = {str(p.relative_to(folder)) for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
    assert python_files - scripts == set(), f"Python files not installed by {module}/CMakeLists.txt"
    assert f"Resources/UI/{module}.ui" in resources and f"Resources/Icons/{module}.png" in resources
    assert f"{module}.py" in scripts


def test_every_engine_file_is_installed():
    folder = REPOSITORY / "BMDGAN"
    scripts, resources = module_install_lists("BMDGAN")
    engine_files = {
        str(p.relative_to(folder))
        for p in (folder / "bmdgan").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert engine_files, "the engine package is empty"
    assert engine_files - scripts - resources == set(), "engine files a packaged extension would miss"


def test_sample_data_is_installed():
    text = (REPOSITORY / "BMDGAN" / "CMakeLists.txt").read_text()
    for path in (REPOSITORY / "Resources" / "SampleData").iterdir():
        assert f"../Resources/SampleData/{path.name}" in text, path.name
