"""CT preparation and CT-based BMD ground truth (issue 3).

Steps, one module each (import them directly; this package imports nothing heavy):

* :mod:`.calibration`, :mod:`.rods`, :mod:`.phantomless`: CT number (HU) -> density (mg/cm3) record;
* :mod:`.shaft`, :mod:`.head`, :mod:`.segmentation`, :mod:`.label_import`, :mod:`.labels`: femur and pelvis
  labels (project convention in :mod:`.labels`);
* :mod:`.landmarks`, :mod:`.markups`: the eight landmarks of Uemura et al. 2022, Slicer markups files;
* :mod:`.pf_region`, :mod:`.measurement`: PF region, QCT vBMD (mg/cm3) and CT-aBMD (g/cm2);
* :mod:`.pipeline`: all of it in one call; :mod:`.montage`: review pictures.
"""
