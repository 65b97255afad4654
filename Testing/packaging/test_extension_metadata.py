"""The extension's catalog metadata (CMakeLists.txt) points at files in this repository and each module names the
modules it needs (the extension catalog's conventions; Slicer cannot be built here)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
RAW = "https://raw.githubusercontent.com/SlicerBMDGAN/SlicerBMDGAN/main/"
MODULES = ("BMDGAN", "BMDGANRegistration", "BMDGANTraining")


def extension_settings() -> dict[str, str]:
    text = (REPOSITORY / "CMakeLists.txt").read_text()
    return dict(re.findall(r'^set\((EXTENSION_\w+) "([^"]*)"\)', text, re.MULTILINE))


def test_icon_and_screenshots_are_files_of_the_repository():
    settings = extension_settings()
    urls = [settings["EXTENSION_ICONURL"], *settings["EXTENSION_SCREENSHOTURLS"].split()]
    assert len(urls) == 1 + len(MODULES)
    for url in urls:
        assert url.startswith(RAW), url
        path = REPOSITORY / url[len(RAW) :]
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", url
        assert path.stat().st_size < 300_000, url
    assert settings["EXTENSION_DESCRIPTION"] and settings["EXTENSION_CONTRIBUTORS"]


@pytest.mark.parametrize("module", MODULES)
def test_each_module_lists_the_modules_it_needs(module):
    source = (REPOSITORY / module / f"{module}.py").read_text()
    assignment = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "self.parent.dependencies"
    )
    dependencies = ast.literal_eval(assignment.value)
    imported = {name for name in MODULES if re.search(rf"^(from|import) {name}\b", source, re.MULTILINE)}
    assert imported <= set(dependencies)  # a module it imports must load first
    assert dependencies == sorted(dependencies) and module not in dependencies
