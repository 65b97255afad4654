"""Logic shared by the BMD-GAN Slicer modules: MRML <-> engine conversions and dependency set-up.

Nothing here imports Qt or ScriptedLoadableModule, so it runs headless on the ``slicer-core`` wheel.
"""
