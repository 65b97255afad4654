"""Plumbing shared by the three module widgets and logics (Slicer only: imports ScriptedLoadableModule).

A widget loads ``Resources/UI/<Module>.ui``, takes its Logic from the caller (tests) or makes one, and keeps
the module's parameter node (a ``parameterNodeWrapper`` class) bound to the GUI across scene closes.
"""

from __future__ import annotations

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin


class ParameterNodeWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Subclasses set ``parameterNodeClass``, define ``createLogic`` and connect their own buttons in ``setup``."""

    parameterNodeClass = None

    def __init__(self, parent=None, logic=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self._parameterNode = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath(f"UI/{self.moduleName}.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logic or self.createLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    def createLogic(self):
        raise NotImplementedError("each module widget creates its own Logic")

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self._parameterNode = None

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self._parameterNode = self.parameterNodeClass(self.logic.getParameterNode())
        self._parameterNode.connectGui(self.ui)


class EngineLogic(ScriptedLoadableModuleLogic):
    """Slicer-side Logic: the parameter node, plus the module's Qt-free logic in ``self.engine``."""

    parameterNodeClass = None

    def __init__(self, engine) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.engine = engine

    def getParameterNode(self):
        return self.parameterNodeClass(super().getParameterNode()).parameterNode
