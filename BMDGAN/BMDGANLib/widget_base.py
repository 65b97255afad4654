"""Plumbing shared by the three module widgets and logics (Slicer only: imports ScriptedLoadableModule).

A widget loads ``Resources/UI/<Module>.ui``, takes its Logic from the caller (tests) or makes one, and binds the
module's parameter node (a ``parameterNodeWrapper`` class) to the GUI while the module is shown
(:class:`~BMDGANLib.widget_lifecycle.ParameterNodeBinding`: connected on enter, disconnected on exit).

The Logic the widgets talk to is one object per module: :class:`ModuleLogic` (the parameter node) mixed with the
module's Qt-free logic class, whose public methods are the whole interface; no engine object is reached through it.
"""

from __future__ import annotations

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic, ScriptedLoadableModuleWidget

from BMDGANLib.widget_lifecycle import ParameterNodeBinding


class ParameterNodeWidget(ScriptedLoadableModuleWidget, ParameterNodeBinding):
    """Subclasses set ``parameterNodeClass``, define ``createLogic`` and connect their own buttons in ``setup``
    (calling this ``setup`` first and ``initializeParameterNode`` last); their ``enter``, ``exit`` and ``cleanup``,
    if any, call these."""

    def __init__(self, parent=None, logic=None) -> None:
        # The binding and the logic first: without a parent, ScriptedLoadableModuleWidget.__init__ calls setup().
        ParameterNodeBinding.__init__(self)
        self.logic = logic
        ScriptedLoadableModuleWidget.__init__(self, parent)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or self.createLogic()
        self.observeScene(slicer.mrmlScene)

    def createLogic(self):
        raise NotImplementedError("each module widget creates its own Logic")

    def enter(self) -> None:
        ParameterNodeBinding.enter(self)

    def exit(self) -> None:
        ParameterNodeBinding.exit(self)

    def cleanup(self) -> None:
        ParameterNodeBinding.cleanup(self)


class ModuleLogic(ScriptedLoadableModuleLogic):
    """Slicer-side Logic: the module's parameter node. Module logics derive from it and from their Qt-free logic."""

    parameterNodeClass = None

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return self.parameterNodeClass(super().getParameterNode()).parameterNode
