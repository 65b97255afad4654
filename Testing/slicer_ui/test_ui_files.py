"""Every module's .ui loads with real Qt (PySide6, offscreen) and has every widget its module code uses.

Slicer's own widget classes (qMRMLNodeComboBox, ctkCollapsibleButton...) are unknown to plain Qt and load as
their declared base class, which is enough to check names and layout. A screenshot of each form is written
to ``build/review/ui/`` for review.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtWidgets = pytest.importorskip("PySide6.QtWidgets")
QtUiTools = pytest.importorskip("PySide6.QtUiTools")

REPOSITORY = Path(__file__).resolve().parents[2]
MODULES = ("BMDGAN", "BMDGANRegistration", "BMDGANTraining")
REVIEW = REPOSITORY / "build" / "review" / "ui"


@pytest.fixture(scope="module")
def application():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.mark.parametrize("module", MODULES)
def test_ui_loads_and_has_every_widget_the_module_uses(application, module):
    form = QtUiTools.QUiLoader().load(str(REPOSITORY / module / "Resources" / "UI" / f"{module}.ui"))
    assert form is not None and form.objectName() == module
    names = {child.objectName() for child in form.findChildren(QtWidgets.QWidget) if child.objectName()}
    used = set(re.findall(r"self\.ui\.(\w+)", (REPOSITORY / module / f"{module}.py").read_text()))
    assert used, f"{module}.py uses no widget"
    assert used - names == set(), f"widgets used in {module}.py but missing from {module}.ui"
    # Widgets bound to the parameter node name a parameter of the module's parameterNodeWrapper class.
    source = (REPOSITORY / module / f"{module}.py").read_text()
    for child in form.findChildren(QtWidgets.QWidget):
        parameter = child.property("SlicerParameterName")
        if parameter:
            assert re.search(rf"^\s+{parameter}\s*:", source, re.MULTILINE), (child.objectName(), parameter)
    REVIEW.mkdir(parents=True, exist_ok=True)
    form.resize(360, 240)
    assert form.grab().save(str(REVIEW / f"{module}.png"))
    assert (REVIEW / f"{module}.png").stat().st_size > 1000
