"""Logic of the BMDGANTraining module; no Qt, runs headless on slicer-core."""
