"""Radiograph simulator: CT -> material DRRs -> detector physics -> clinical processing -> 12-16 bit image.

Physics (effective-energy model, every step documented in :data:`PARAMETER_RANGES`):

1. Material decomposition of the CT (:mod:`.materials`): adipose, soft tissue and bone mineral (HA)
   partial densities, projected in one pass to areal densities A_m (g/cm2).
2. Beer-Lambert at the effective energy E: ``T = exp(-sum_m mu/rho_m(E) * A_m)`` with NIST mu/rho
   (:mod:`.attenuation`): bone and soft tissue follow their own energy laws.
3. Scatter: a blurred fraction of the primary weighted by the attenuation it went through (the
   unattenuated beam does not scatter), ``S = k * Gauss(T * (-ln T), scatter_sigma_mm)``, with k set so that
   the median scatter-to-primary ratio over the anatomy equals ``scatter_to_primary``.
4. Quanta: the cone-beam fall-off cos^3 (inverse square and obliquity) times ``T + S``, scaled as an
   automatic exposure control does so that the median anatomy pixel receives ``photons_per_mm2``.
5. Quantum noise: Poisson counts of ``P + S``; detector blur (scintillator light spread, Gaussian, after
   the quantum noise as in a real detector); electronic noise (Gaussian, in quanta).
6. Flat-field and log: ``L = -ln(counts / flat)``, then :mod:`.processing` (range compression, window,
   edge enhancement, tone curve) and quantisation to 12, 14 or 16 bits.

All random draws come from one ``numpy.random.Generator``: a seed gives the same image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.ndimage import gaussian_filter

from ..errors import InputError
from .attenuation import mass_attenuation
from .geometry import ProjectionGeometry, volume_centre_lps
from .materials import MATERIAL_CHANNELS, MaterialModel, decompose_hu
from .processing import ANATOMY_LOG_THRESHOLD, process_for_presentation, quantise
from .projector import DEFAULT_CHUNK_BYTES, Projector


@dataclass(frozen=True)
class ParameterRange:
    """Sampling range of one simulation parameter and why."""

    low: float
    high: float
    log: bool = False
    why: str = ""


PARAMETER_RANGES = {
    "effective_energy_kev": ParameterRange(
        40.0,
        60.0,
        why="mean energy behind the patient of a 70-85 kVp hip/pelvis beam (2.5 mm Al + patient "
        "hardening); below 40 keV bone contrast is exaggerated, above 60 keV it fades",
    ),
    "photons_per_mm2": ParameterRange(
        2e4,
        1.5e5,
        log=True,
        why="detected quanta per mm2 behind the patient (median of the anatomy, as set by the "
        "automatic exposure control): 1-5 uGy detector air kerma at 50 keV "
        "(3.3e4 photons/mm2/uGy) times a detective quantum efficiency of 0.6-0.9",
    ),
    "scatter_to_primary": ParameterRange(
        0.2, 1.0, why="median scatter-to-primary ratio over the anatomy behind an anti-scatter grid (adult pelvis)"
    ),
    "scatter_sigma_mm": ParameterRange(20.0, 60.0, why="width of the scatter kernel at the detector (mm)"),
    "detector_blur_mm": ParameterRange(
        0.1, 0.4, why="Gaussian sigma of the scintillator light spread plus focal-spot blur at the detector (mm)"
    ),
    "electronic_noise_quanta": ParameterRange(1.0, 10.0, why="electronic noise std in quanta per pixel"),
    "range_compression": ParameterRange(
        0.3, 0.7, why="fraction of the low-frequency log signal removed (dynamic-range compression)"
    ),
    "range_sigma_mm": ParameterRange(15.0, 40.0, why="kernel sigma of the dynamic-range compression (mm)"),
    "window_low_percentile": ParameterRange(0.5, 2.0, why="exposure recognition: lower percentile of the anatomy"),
    "window_high_percentile": ParameterRange(98.0, 99.5, why="exposure recognition: upper percentile"),
    "unsharp_gain": ParameterRange(0.0, 1.5, why="edge enhancement gain of the console's unsharp mask"),
    "unsharp_sigma_mm": ParameterRange(1.5, 5.0, why="unsharp-mask kernel sigma at the detector (mm)"),
    "tone_contrast": ParameterRange(4.0, 10.0, why="slope of the sigmoid tone curve (film-like gradient)"),
    "tone_offset": ParameterRange(
        0.0, 0.2, why="centre of the tone curve above the median anatomy in the normalised window (brightness)"
    ),
}
"""Documented ranges sampled uniformly (log-uniformly where ``log``) by :func:`sample_parameters`."""
BITS_STORED_CHOICES = (12, 14, 16)
"""Bits stored of the output, drawn uniformly."""


@dataclass(frozen=True)
class SimulationParameters:
    """One radiograph's acquisition and processing parameters (units in the names; see PARAMETER_RANGES)."""

    effective_energy_kev: float = 50.0
    photons_per_mm2: float = 8e4
    scatter_to_primary: float = 0.5
    scatter_sigma_mm: float = 40.0
    detector_blur_mm: float = 0.2
    electronic_noise_quanta: float = 3.0
    range_compression: float = 0.5
    range_sigma_mm: float = 25.0
    window_low_percentile: float = 1.0
    window_high_percentile: float = 99.0
    unsharp_gain: float = 0.5
    unsharp_sigma_mm: float = 3.0
    tone_contrast: float = 6.0
    tone_offset: float = 0.1
    bits_stored: int = 12

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict, base: SimulationParameters | None = None) -> SimulationParameters:
        """Parameters from a dict; keys missing from ``data`` come from ``base`` (defaults if None)."""
        known = {f.name for f in fields(SimulationParameters)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                None, f"unknown simulation parameter(s): {', '.join(unknown)}", f"use: {', '.join(sorted(known))}"
            )
        merged = (base or SimulationParameters()).to_dict()
        merged.update(data)
        merged["bits_stored"] = int(merged["bits_stored"])
        return SimulationParameters(**merged)


def sample_parameters(rng: np.random.Generator) -> SimulationParameters:
    """Parameters drawn from :data:`PARAMETER_RANGES` with ``rng`` (seeded Generator: reproducible cohort)."""
    values = {}
    for name, spec in PARAMETER_RANGES.items():
        if spec.log:
            values[name] = float(np.exp(rng.uniform(np.log(spec.low), np.log(spec.high))))
        else:
            values[name] = float(rng.uniform(spec.low, spec.high))
    values["bits_stored"] = int(rng.choice(BITS_STORED_CHOICES))
    return SimulationParameters(**values)


@dataclass
class SimulatedRadiograph:
    """Output of :func:`simulate_radiograph`.

    pixels: uint16 (rows, cols) in [0, 2**bits_stored - 1], MONOCHROME2 (bone bright).
    processed: float32 in [0, 1] before quantisation. log_signal: detector -ln(I/I0) (dimensionless).
    areal_density_g_per_cm2: material DRRs (3, rows, cols) in :data:`MATERIAL_CHANNELS` order.
    source_to_patient_mm: depth of the CT centre (the patient plane of PixelSpacing).
    """

    pixels: np.ndarray
    processed: np.ndarray
    log_signal: np.ndarray
    areal_density_g_per_cm2: np.ndarray
    geometry: ProjectionGeometry
    parameters: SimulationParameters
    window_center: float
    window_width: float
    source_to_patient_mm: float

    @property
    def bits_stored(self) -> int:
        return self.parameters.bits_stored


def material_projections(
    hu_volume,
    geometry: ProjectionGeometry,
    bone_density_mg_per_cm3: np.ndarray | None = None,
    model: MaterialModel = MaterialModel(),
    device=None,
    progress: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> np.ndarray:
    """Areal densities (3, rows, cols) g/cm2 of adipose, soft tissue and HA of a HU volume, one pass."""
    if hu_volume.unit != "HU":
        raise InputError(
            hu_volume.source or None,
            f"the simulator needs a CT in HU, got unit {hu_volume.unit!r}",
            "give the CT in Hounsfield units (and the calibrated density separately)",
        )
    materials = decompose_hu(hu_volume.array, bone_density_mg_per_cm3, model)
    projector = Projector(
        materials,
        hu_volume.geometry.ijk_to_lps(),
        unit="mg/cm3",
        channel_names=list(MATERIAL_CHANNELS),
        device=device,
        chunk_bytes=chunk_bytes,
    )
    return projector.project(geometry, progress=progress)


def detector_log_signal(
    areal_density_g_per_cm2: np.ndarray,
    geometry: ProjectionGeometry,
    parameters: SimulationParameters,
    rng: np.random.Generator,
) -> np.ndarray:
    """Flat-fielded detector log signal -ln(I/I0) (float32) after scatter, noise and blur (steps 2-6)."""
    p = parameters
    exponent = np.zeros(areal_density_g_per_cm2.shape[1:], dtype=np.float64)
    for channel, material in enumerate(MATERIAL_CHANNELS):
        exponent += float(mass_attenuation(material, p.effective_energy_kev)) * areal_density_g_per_cm2[channel]
    transmission = np.exp(-exponent)
    anatomy = exponent > ANATOMY_LOG_THRESHOLD
    if anatomy.sum() < 100:
        anatomy = np.ones_like(anatomy)
    spacing = np.array([geometry.row_spacing_mm, geometry.column_spacing_mm])
    # Scatter: blurred primary weighted by the path it crossed (no scatter from unattenuated beam),
    # scaled so that the median scatter-to-primary ratio over the anatomy is the parameter.
    potential = gaussian_filter(transmission * exponent, p.scatter_sigma_mm / spacing, mode="constant")
    ratio_unit = np.median(potential[anatomy] / transmission[anatomy])
    scatter = potential * (p.scatter_to_primary / max(ratio_unit, 1e-12))
    if geometry.parallel:
        falloff = np.ones_like(transmission)
    else:
        x, y = geometry.pixel_camera_mm()
        sid = geometry.source_to_detector_mm
        falloff = (sid / np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + sid**2)) ** 3
    # Automatic exposure control: the median anatomy pixel receives photons_per_mm2 quanta per mm2.
    relative = falloff * (transmission + scatter)
    quanta_per_pixel = p.photons_per_mm2 * geometry.row_spacing_mm * geometry.column_spacing_mm
    flat = falloff * quanta_per_pixel / np.median(relative[anatomy])
    counts = rng.poisson(flat / falloff * relative).astype(np.float64)
    counts = gaussian_filter(counts, p.detector_blur_mm / spacing, mode="nearest")
    counts += rng.normal(0.0, p.electronic_noise_quanta, size=counts.shape)
    return (-np.log(np.maximum(counts, 0.5) / flat)).astype(np.float32)


def simulate_radiograph(
    hu_volume,
    geometry: ProjectionGeometry,
    parameters: SimulationParameters | None = None,
    *,
    rng: np.random.Generator | int | None = None,
    bone_density_mg_per_cm3: np.ndarray | None = None,
    model: MaterialModel = MaterialModel(),
    areal_density_g_per_cm2: np.ndarray | None = None,
    device=None,
    progress: bool = False,
) -> SimulatedRadiograph:
    """Simulated radiograph of a CT (HU) at ``geometry``. Parameters are drawn from ``rng`` when None.

    rng: a Generator or an int seed (same seed -> same image). areal_density_g_per_cm2: precomputed material
    DRRs (from :func:`material_projections`) to simulate several acquisitions of one projection cheaply.
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    parameters = parameters or sample_parameters(rng)
    if areal_density_g_per_cm2 is None:
        areal_density_g_per_cm2 = material_projections(
            hu_volume, geometry, bone_density_mg_per_cm3, model, device=device, progress=progress
        )
    log_signal = detector_log_signal(areal_density_g_per_cm2, geometry, parameters, rng)
    pitch = 0.5 * (geometry.row_spacing_mm + geometry.column_spacing_mm)
    processed = process_for_presentation(
        log_signal,
        window_low_percentile=parameters.window_low_percentile,
        window_high_percentile=parameters.window_high_percentile,
        unsharp_gain=parameters.unsharp_gain,
        unsharp_sigma_px=parameters.unsharp_sigma_mm / pitch,
        tone_contrast=parameters.tone_contrast,
        tone_offset=parameters.tone_offset,
        range_compression=parameters.range_compression,
        range_sigma_px=parameters.range_sigma_mm / pitch,
    )
    pixels, centre, width = quantise(processed, parameters.bits_stored)
    centre_lps = volume_centre_lps(hu_volume.shape_ijk, hu_volume.geometry.ijk_to_lps())
    depth = float(geometry.to_camera(centre_lps)[2])
    if geometry.parallel or depth <= 0:
        depth = geometry.source_to_detector_mm
    return SimulatedRadiograph(
        pixels, processed, log_signal, areal_density_g_per_cm2, geometry, parameters, centre, width, depth
    )
