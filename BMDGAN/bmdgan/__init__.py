"""BMD-GAN engine: bone mineral density of the proximal femur from a plain hip radiograph.

Every algorithm of the 3D Slicer extension lives here and runs without Slicer.

Conventions used everywhere in the package:

* Physical frame: DICOM/ITK **LPS** (x to the patient's Left, y to Posterior, z to Superior), in mm.
  Slicer's RAS is converted at the MRML boundary only (``BMDGANLib.mrml_conversion``).
* Volume arrays are indexed ``[k, j, i]`` (slice, row, column), as SimpleITK's numpy view;
  spacings and origins are given in ``(i, j, k)`` order, as SimpleITK reports them.
* Units are in names or docstrings: mm, HU, mg/cm3 (hydroxyapatite), g/cm2.
"""

__version__ = "0.1.0"

import os

# OpenMP threads that spin while waiting take the cores of a busy machine: with both cores busy, two threads ran the
# DRR projector 2.5-7 times slower than one, and one estimate 10-15 times; waiting passively, at most 1.2 times
# (benchmarks/bench_drr.py, docs/benchmarks.md). libgomp reads this once, when torch is first imported, so it only
# helps where bmdgan is imported before torch; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
