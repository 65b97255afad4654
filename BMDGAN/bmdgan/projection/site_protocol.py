"""Acquisition protocols: what is fixed at one imaging site and what still changes from patient to patient.

The paper's radiographs come from one hospital: one detector, one console, one hip protocol. There the
processing (window algorithm, edge enhancement, tone curve) and the detector are the same for every image,
and what varies follows the patient: a thicker patient hardens the beam (higher effective energy) and
scatters more; the automatic exposure control and the technologist add a little spread. A cohort drawn with
:func:`bmdgan.projection.simulator.sample_parameters` for every image instead mixes every vendor and protocol
in :data:`~bmdgan.projection.simulator.PARAMETER_RANGES`: the harder, multi-site case.

* ``reference``: the documented default site (:class:`SimulationParameters` defaults) with patient-driven
  variation.
* ``site:N``: another site, its console and detector drawn once from the documented ranges with seed N
  (train at one site, test at another).
* ``varied``: every image from its own random site.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from .simulator import SimulationParameters, sample_parameters

HARDENING_KEV_PER_CM_WATER = 0.4
"""Rise of the effective energy of a 70-85 kVp beam per extra cm of water-equivalent path (beam hardening;
the mean energy of such spectra rises by about 1 keV per 2-3 cm of water over 15-25 cm)."""
SCATTER_TO_PRIMARY_PER_CM_WATER = 0.03
"""Rise of the scatter-to-primary ratio behind a grid per extra cm of water-equivalent path."""
ADIPOSE_WATER_EQUIVALENCE = 0.9
"""Water-equivalent thickness of 1 mm of adipose tissue (its electron density relative to water)."""
KEV_SPREAD = 1.5
"""Half-range (keV) of the effective energy from the technologist's kVp choice at one site."""
SCATTER_SPREAD = 0.1
"""Half-range of the scatter-to-primary ratio from grid alignment and field size."""
DOSE_SPREAD = 1.4
"""Factor (each way, log-uniform) of the detector dose around the site's automatic-exposure target."""


@dataclass(frozen=True)
class SiteProtocol:
    """A site's fixed console and detector (``base``) and its per-patient variation rules."""

    name: str
    base: SimulationParameters

    def parameters_for(self, rng: np.random.Generator, extra_adipose_mm: float) -> SimulationParameters:
        """One image's parameters for a patient with ``extra_adipose_mm`` more fat in the beam than reference."""
        extra_water_cm = ADIPOSE_WATER_EQUIVALENCE * extra_adipose_mm / 10.0
        kev = (
            self.base.effective_energy_kev
            + HARDENING_KEV_PER_CM_WATER * extra_water_cm
            + rng.uniform(-KEV_SPREAD, KEV_SPREAD)
        )
        scatter = (
            self.base.scatter_to_primary
            + SCATTER_TO_PRIMARY_PER_CM_WATER * extra_water_cm
            + rng.uniform(-SCATTER_SPREAD, SCATTER_SPREAD)
        )
        dose = self.base.photons_per_mm2 * float(np.exp(rng.uniform(-np.log(DOSE_SPREAD), np.log(DOSE_SPREAD))))
        return replace(
            self.base,
            effective_energy_kev=float(kev),
            scatter_to_primary=float(max(scatter, 0.05)),
            photons_per_mm2=dose,
        )


REFERENCE_SITE = SiteProtocol("reference", SimulationParameters())


def parse_acquisition(text: str) -> SiteProtocol | None:
    """``reference``, ``site:N`` or ``varied`` (None: every image draws its own parameters)."""
    if text == "varied":
        return None
    if text == "reference":
        return REFERENCE_SITE
    if text.startswith("site:") and text[5:].isdigit():
        seed = int(text[5:])
        return SiteProtocol(text, sample_parameters(np.random.default_rng([seed, 7919])))
    raise InputError(None, f"unknown acquisition {text!r}", "use 'reference', 'site:N' (N an integer) or 'varied'")
