"""One version: ``bmdgan.__version__`` is the newest release in CHANGELOG.md and what pip's metadata reads."""

from __future__ import annotations

import re
from pathlib import Path

import bmdgan

REPOSITORY = Path(__file__).resolve().parents[2]


def test_the_newest_changelog_release_is_the_package_version():
    changelog = (REPOSITORY / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})$", changelog, re.MULTILINE)
    assert releases, "CHANGELOG.md lists no release"
    assert releases[0][0] == bmdgan.__version__
    assert "## [Unreleased]" in changelog.split(f"## [{releases[0][0]}]")[0]
    assert f"[{releases[0][0]}]: " in changelog  # the link reference of the release heading


def test_pip_reads_the_version_from_the_package():
    pyproject = (REPOSITORY / "pyproject.toml").read_text()  # tomllib is not in Python 3.10
    assert re.search(r'^dynamic = \[[^]]*"version"', pyproject, re.MULTILINE)
    assert re.search(r'^version = \{ attr = "bmdgan.__version__" \}$', pyproject, re.MULTILINE)
    assert re.fullmatch(r"\d+\.\d+\.\d+", bmdgan.__version__)
