"""Logic of the BMDGANRegistration (dataset curation) module; no Qt, runs headless on slicer-core."""
