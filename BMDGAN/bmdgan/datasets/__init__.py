"""Paired datasets: on-disk format, the paper's hip normalisation and patient-level folds."""
