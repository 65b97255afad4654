"""Entering and leaving a module widget leaves no observer behind (headless, on a real MRML scene).

Slicer's ``parameterNodeWrapper`` needs Qt, which slicer-core lacks; :class:`GuiConnection` reproduces the part of
its ``connectGui``/``disconnectGui`` that matters here: each connection observes the parameter node (to refresh
the widgets) until it is disconnected. The modules' self-tests run the same check on the real widgets in Slicer
(``BMDGANLib.widget_lifecycle.enter_and_exit``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from BMDGANLib.widget_lifecycle import ParameterNodeBinding, enter_and_exit, observer_count  # noqa: E402

REPOSITORY = Path(__file__).resolve().parents[2]
MODULES = ("BMDGAN", "BMDGANRegistration", "BMDGANTraining")


class GuiConnection:
    """Wraps a parameter node; ``connectGui(gui)`` observes the node and appends to the list ``gui`` on each change."""

    def __init__(self, node) -> None:
        self.parameterNode = node

    def connectGui(self, gui: list) -> int:
        return self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: gui.append(event))

    def disconnectGui(self, tag: int) -> None:
        self.parameterNode.RemoveObserver(tag)


class SceneLogic:
    """The parameter node as ScriptedLoadableModuleLogic.getParameterNode keeps it: one singleton node per scene."""

    def __init__(self, scene) -> None:
        self.scene = scene

    def getParameterNode(self):
        node = self.scene.GetSingletonNode("BMDGANTest", "vtkMRMLScriptedModuleNode")
        if node is None:
            node = self.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
            node.SetSingletonTag("BMDGANTest")
        return node


class Widget(ParameterNodeBinding):
    parameterNodeClass = GuiConnection

    def __init__(self, scene) -> None:
        ParameterNodeBinding.__init__(self)
        self.logic, self.ui = SceneLogic(scene), []
        self.observeScene(scene)
        self.initializeParameterNode()  # as the modules' setup does


class OldWidget(Widget):
    """The widget before the fix: connected on every enter, never disconnected on exit."""

    def enter(self) -> None:
        self._parameterNode = self.parameterNodeClass(self.logic.getParameterNode())
        self._parameterNode.connectGui(self.ui)

    def exit(self) -> None:
        pass


@pytest.fixture()
def make_widget():
    """Widgets on a fresh scene, cleaned up after the test (as Slicer does on exit): an observer left on the scene
    would call into a half-destroyed widget when the scene goes."""
    made = []

    def make(kind=None):
        made.append((kind or Widget)(slicer.vtkMRMLScene()))
        return made[-1]

    yield make
    for widget in made:
        widget.cleanup()


def test_entering_and_leaving_ten_times_leaves_the_observer_count_unchanged(make_widget):
    widget = make_widget()
    node = widget.logic.getParameterNode()
    before, after = enter_and_exit(widget, times=10)
    assert before == after == (0, 2)  # left: nothing observes the node; the widget observes the scene's close
    widget.enter()
    assert observer_count(node) == 1
    node.Modified()
    assert len(widget.ui) == 1  # one GUI refresh per change, not one per visit
    widget.exit()
    node.Modified()
    assert len(widget.ui) == 1  # a hidden module's GUI is not refreshed


def test_the_check_leaves_a_shown_module_bound_as_it_found_it(make_widget):
    widget = make_widget()
    widget.enter()  # the self-test runs from the module's own panel
    assert enter_and_exit(widget, times=10) == ((0, 2), (0, 2))
    assert widget._entered and observer_count(widget.logic.getParameterNode()) == 1


def test_the_count_sees_the_pile_up_of_the_old_widget(make_widget):
    widget = make_widget(OldWidget)
    before, after = enter_and_exit(widget, times=10)
    assert after[0] - before[0] == 10
    widget.logic.getParameterNode().Modified()
    assert len(widget.ui) == 12  # setup's connection, the first visit's and ten more


def test_a_scene_close_rebinds_a_shown_module_and_unbinds_a_hidden_one(make_widget):
    """Closing the scene keeps the singleton parameter node (reset, as in Slicer): a shown module is bound to it
    again once, a hidden one not at all."""
    widget = make_widget()
    scene = widget.logic.scene
    widget.enter()
    node = widget.logic.getParameterNode()
    scene.Clear(0)
    assert widget._parameterNode.parameterNode is widget.logic.getParameterNode()
    assert observer_count(widget.logic.getParameterNode()) == 1
    widget.exit()
    scene.Clear(0)
    assert widget._parameterNode is None and observer_count(node) == 0
    widget.cleanup()
    assert widget.Observations == []


@pytest.mark.parametrize("module", MODULES)
def test_each_module_widget_uses_the_binding_and_its_self_test_checks_it(module):
    """The module scripts need Slicer's Qt to import; read them instead: the widget derives from the shared base,
    its own enter/exit/cleanup call the base's, and the self-test runs the enter-and-leave check."""
    tree = ast.parse((REPOSITORY / module / f"{module}.py").read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    widget = classes[f"{module}Widget"]
    assert [base.id for base in widget.bases] == ["ParameterNodeWidget"]
    for method in (m for m in widget.body if isinstance(m, ast.FunctionDef) and m.name in ("enter", "exit", "cleanup")):
        calls = {
            f"{c.func.value.id}.{c.func.attr}"
            for c in ast.walk(method)
            if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and isinstance(c.func.value, ast.Name)
        }
        assert f"ParameterNodeWidget.{method.name}" in calls, (module, method.name)
    self_test = ast.unparse(classes[f"{module}Test"])
    assert "enter_and_exit(" in self_test and "test_enter_and_exit_keeps_observers" in self_test
