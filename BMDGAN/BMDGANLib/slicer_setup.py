"""In-Slicer set-up shared by the three widgets: install missing requirements after asking the user.

Only the widgets call this (it opens dialogs); Logic never does.
"""

from __future__ import annotations

from . import dependencies


def _install_torch_through_pytorch_extension(slicer) -> bool:
    """Use the PyTorch extension's installer when present (it picks the right CUDA build)."""
    try:
        import PyTorchUtils
    except ImportError:
        return False
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True)
    return torch is not None


def ensure_requirements(slicer) -> bool:
    """Return True when every requirement is importable, installing missing ones after confirmation."""
    missing = dependencies.missing_requirements()
    if any(r.name == "torch" for r in missing) and _install_torch_through_pytorch_extension(slicer):
        missing = dependencies.missing_requirements()
    if not missing:
        return True
    question = (
        f"BMD-GAN needs these Python packages, which are not installed: "
        f"{dependencies.describe_downloads(missing)}.\n\nInstall them now? Slicer's own packages are "
        "kept as they are. This can take several minutes."
    )
    if not slicer.util.confirmOkCancelDisplay(question, windowTitle="BMD-GAN set-up"):
        return False
    with slicer.util.WaitCursor():
        dependencies.install(missing, slicer.util.pip_install)
    return not dependencies.missing_requirements()
