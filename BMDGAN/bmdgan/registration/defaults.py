"""Registration defaults that the front ends show or reuse, in a module without torch: the command line's option
defaults and the Slicer overlay read them here, :class:`~.problem.RegistrationSettings` defaults to them."""

ENERGY_KEV = 50.0
"""Effective energy (keV) at which the CT's HU become the attenuation of the registration's DRRs."""
BONE_THRESHOLD_HU = 200.0
"""Voxels above this (HU) are bone when no labels are given: centre of rotation, windows, checks, outline."""
