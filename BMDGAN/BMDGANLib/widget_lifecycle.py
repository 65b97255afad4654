"""When a module widget is bound to its parameter node: connected on enter, disconnected on exit and scene close.

Slicer calls a widget's ``enter`` each time the user opens the module and ``exit`` when they leave. Connecting the
parameter node to the GUI (``connectGui``, which observes the node) on every ``enter`` without undoing it on
``exit`` piles up one more observer per visit, each updating the GUI on every change. :class:`ParameterNodeBinding`
keeps at most one connection: it is made on enter (and after a scene close while the module is shown) and undone
on exit, scene close and cleanup. The parameter node itself is kept on exit, so that timers of a running training
or registration can still read it.

No Qt and no ScriptedLoadableModule here (``slicer.util.VTKObservationMixin`` is in slicer-core), so the
bookkeeping is tested headless; :mod:`BMDGANLib.widget_base` adds it to the Slicer widgets.
"""

from __future__ import annotations

import vtk
from slicer.util import VTKObservationMixin


class ParameterNodeBinding(VTKObservationMixin):
    """Subclasses set ``parameterNodeClass`` (a ``parameterNodeWrapper`` class), ``self.logic`` (with
    ``getParameterNode()``) and ``self.ui`` (the widgets ``connectGui`` binds), and call :meth:`observeScene`."""

    parameterNodeClass = None

    def __init__(self) -> None:
        VTKObservationMixin.__init__(self)
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._entered = False

    def observeScene(self, scene) -> None:
        """Follow the scene's close: the parameter node goes with it, and a new one is bound if the module is shown."""
        self.addObserver(scene, scene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(scene, scene.EndCloseEvent, self.onSceneEndClose)

    def enter(self) -> None:
        self._entered = True
        self.initializeParameterNode()

    def exit(self) -> None:
        self._entered = False
        self.disconnectGui()

    def cleanup(self) -> None:
        self.disconnectGui()
        self.removeObservers()

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self._entered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.parameterNodeClass(self.logic.getParameterNode()))

    def setParameterNode(self, parameterNode) -> None:
        """Bind ``parameterNode`` (a wrapper, or None) to the GUI, undoing the previous binding first."""
        self.disconnectGui()
        self._parameterNode = parameterNode
        if parameterNode is not None:
            self._parameterNodeGuiTag = parameterNode.connectGui(self.ui)

    def disconnectGui(self) -> None:
        if self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None


def observer_count(vtk_object) -> int:
    """How many observers ``vtk_object`` has. VTK numbers an object's observers 1, 2, 3... in the order they were added
    and never reuses the tag of a removed one, so this counts the tags below a fresh probe's that still name a
    command."""
    probe = vtk_object.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: None)
    vtk_object.RemoveObserver(probe)
    return sum(vtk_object.GetCommand(tag) is not None for tag in range(1, probe))


def enter_and_exit(widget, times: int = 10) -> tuple[tuple[int, int], tuple[int, int]]:
    """Enter and leave ``widget`` ``times`` times; returns (observers of its parameter node, observations the widget
    holds) before and after, both counted while it is left. For the modules' self-tests in Slicer: the pairs must
    be equal."""
    node = widget.logic.getParameterNode()

    def counts() -> tuple[int, int]:
        return observer_count(node), len(widget.Observations)

    shown = widget._entered  # a self-test run from the module's own panel leaves it bound, as it found it
    widget.enter()
    widget.exit()
    before = counts()
    for _ in range(times):
        widget.enter()
        widget.exit()
    after = counts()
    if shown:
        widget.enter()
    return before, after
