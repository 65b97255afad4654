"""Review picture of a registration: the radiograph with the DRR's edges and the projected bone outline.

Green: edges of the DRR at the registered pose (thinned gradient-magnitude maxima, strongest 15%).
Magenta: outline of the projected bone (the structure mask, else HU above the bone threshold).
Banner: quality flag (green "GOOD" / red "FAILED"), final similarity and the first messages.
A reviewer sees at a glance whether the femur outline sits on the radiograph's femur.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation, binary_erosion

from ..atomic import atomic_path
from ..projection.attenuation import hu_to_attenuation
from ..projection.image_io import display_scale

EDGE_FRACTION = 0.15
"""Fraction of the DRR's (non-zero gradient) pixels drawn as edges."""
EDGE_COLOUR = (40, 230, 40)
BONE_COLOUR = (255, 40, 255)
BONE_LEVEL = 0.02
"""Bone silhouette: pixels whose bone projection exceeds this fraction of its maximum."""


def drr_edges(drr: np.ndarray, fraction: float = EDGE_FRACTION) -> np.ndarray:
    """Thin edges (bool) of an image: gradient-magnitude local maxima across the edge, strongest ``fraction``."""
    image = np.asarray(drr, dtype=np.float64)
    gy, gx = np.gradient(image)
    magnitude = np.hypot(gx, gy)
    positive = magnitude[magnitude > 0]
    if positive.size == 0:
        return np.zeros(image.shape, dtype=bool)
    threshold = np.quantile(positive, 1.0 - fraction)
    angle = (np.rad2deg(np.arctan2(gy, gx)) + 180.0) % 180.0
    padded = np.pad(magnitude, 1)
    rows, cols = image.shape
    centre = padded[1:-1, 1:-1]

    def shifted(dr: int, dc: int) -> np.ndarray:
        return padded[1 + dr : 1 + dr + rows, 1 + dc : 1 + dc + cols]

    maximum = np.zeros(image.shape, dtype=bool)
    for low, high, (dr, dc) in (
        (0, 22.5, (0, 1)),
        (157.5, 180.1, (0, 1)),
        (22.5, 67.5, (1, 1)),
        (67.5, 112.5, (1, 0)),
        (112.5, 157.5, (1, -1)),
    ):
        band = (angle >= low) & (angle < high)
        maximum |= band & (centre >= shifted(dr, dc)) & (centre >= shifted(-dr, -dc))
    return maximum & (magnitude >= threshold) & (magnitude > 0)


def bone_outline(bone_projection: np.ndarray, thickness_px: int = 1) -> np.ndarray:
    """Outline (bool) of the projected bone silhouette."""
    projection = np.asarray(bone_projection, dtype=np.float64)
    if projection.max() <= 0:
        return np.zeros(projection.shape, dtype=bool)
    silhouette = projection > BONE_LEVEL * projection.max()
    outline = silhouette & ~binary_erosion(silhouette)
    if thickness_px > 1:
        outline = binary_dilation(outline, iterations=thickness_px - 1)
    return outline


def overlay_image(
    radiograph: np.ndarray,
    drr: np.ndarray,
    bone_projection: np.ndarray | None = None,
    banner: list[str] | None = None,
    good: bool | None = None,
) -> np.ndarray:
    """RGB uint8 picture (rows (+ banner), cols, 3) of the radiograph with the DRR edges and bone outline.

    All images share one pixel grid (rows, cols). ``good`` colours the banner (None: grey).
    """
    grey = (display_scale(radiograph, 0.5, 99.5) * 255.0).astype(np.uint8)
    picture = np.repeat(grey[..., None], 3, axis=-1)
    thickness = max(1, int(round(max(grey.shape) / 600)))
    edges = drr_edges(drr)
    if thickness > 1:
        edges = binary_dilation(edges, iterations=thickness - 1)
    picture[edges] = EDGE_COLOUR
    if bone_projection is not None:
        picture[bone_outline(bone_projection, thickness)] = BONE_COLOUR
    if banner:
        picture = _with_banner(picture, banner, good)
    return picture


def _with_banner(picture: np.ndarray, lines: list[str], good: bool | None) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    width = picture.shape[1]
    size = max(10, min(18, width // 45))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    import textwrap

    characters = max(20, int(width / (0.55 * size)))
    lines = [part for line in lines for part in (textwrap.wrap(line, characters) or [""])]
    height = (size + 4) * len(lines) + 6
    colour = (120, 120, 120) if good is None else ((20, 120, 20) if good else (170, 20, 20))
    banner = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(banner)
    for number, line in enumerate(lines):
        draw.text((4, 3 + number * (size + 4)), line, fill=(255, 255, 255), font=font)
    return np.concatenate([np.asarray(banner), picture], axis=0)


def write_png_rgb(path: str | Path, picture: np.ndarray) -> Path:
    """Write an RGB uint8 picture as PNG atomically."""
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(np.asarray(picture, dtype=np.uint8), mode="RGB").save(temporary, format="PNG")
    return Path(path)


def display_projections(
    geometry,
    ct,
    centre_lps_mm: np.ndarray,
    energy_kev: float,
    bone_threshold_hu: float,
    structure_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The CT's DRR (line integral of attenuation at ``energy_kev``) and its bone's projection on ``geometry``'s
    detector, from a CT pooled to about the detector pitch at ``centre_lps_mm`` (fast enough to redraw while a
    user nudges the pose). Bone: ``structure_mask``, else HU above ``bone_threshold_hu``."""
    from ..projection.projector import Projector
    from .levels import beam_axis, pool_mask, pool_volume, volume_factors
    from .problem import bone_mask_of

    pitch = 0.5 * (geometry.column_spacing_mm + geometry.row_spacing_mm)
    magnification = geometry.magnification_at(centre_lps_mm)
    ijk_to_lps = ct.geometry.ijk_to_lps()
    factors = volume_factors(
        ct.geometry.spacing_mm, beam_axis(ijk_to_lps, geometry.camera_from_lps), pitch / magnification, depth_ratio=2.0
    )
    attenuation = hu_to_attenuation(ct.array, energy_kev)
    bone = bone_mask_of(ct.array, bone_threshold_hu, structure_mask)
    values, pooled_ijk_to_lps = pool_volume(attenuation, ijk_to_lps, factors)
    bone_fraction = pool_mask(bone, factors)
    projector = Projector(
        values, pooled_ijk_to_lps, unit="1/mm", masks=bone_fraction[None], channel_names=["bone"], include_unmasked=True
    )
    drr, bone_projection = projector.project(geometry)
    return drr, bone_projection


def registration_overlay(
    result,
    pixels: np.ndarray,
    ct,
    structure_mask: np.ndarray | None = None,
    max_side_px: int = 1024,
    extra_lines: list[str] | None = None,
) -> np.ndarray:
    """Overlay picture of a :class:`~.pipeline.RegistrationResult` on its radiograph ``pixels``, at most
    ``max_side_px`` pixels wide or high (the detector is block-averaged for display)."""
    from .levels import downsample_geometry, downsample_image

    geometry = result.geometry
    factor = max(1, int(np.ceil(max(geometry.shape) / float(max_side_px))))
    display_geometry = downsample_geometry(geometry, factor)
    image = downsample_image(pixels, factor)
    drr, bone_projection = display_projections(
        display_geometry,
        ct,
        result.centre_lps_mm,
        result.settings.energy_kev,
        result.settings.bone_threshold_hu,
        structure_mask,
    )
    quality = result.quality
    lines = [
        f"{quality.flag.upper()}  {result.similarity_name.upper()} {result.similarity:.3f}  "
        f"start: {result.start}  {result.seconds:.0f} s"
    ]
    lines += [message for message in quality.messages[:2]]
    lines += list(extra_lines or [])
    return overlay_image(image, drr, bone_projection, banner=lines, good=quality.good)
