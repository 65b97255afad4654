"""Image similarity for 2D-3D registration: gradient correlation (GC) and normalised cross-correlation (NCC).

GC (Penney et al. 1998; the measure of the paper's registration, Otake et al. 2012): the NCC of the
horizontal Sobel gradients and the NCC of the vertical ones, averaged. It is 1 for identical images (up
to a positive gain and offset), near 0 for unrelated images and negative for inverted contrast. Working
on gradients makes it insensitive to the low frequencies that differ between a DRR (line integrals) and a
clinical radiograph (scatter, dynamic-range compression): bone edges dominate.

Patches (``patch_px``): the correlations are computed in square patches (half-overlapping) and averaged
over the patches where the fixed image has structure ("patch GC", as in Grupp et al. 2020). Why: a
radiograph's tone curve and range compression scale the gradients by a gain that varies across the
image (bright bone is compressed, soft tissue is not); one global correlation then prefers a slightly
wrong pose (measured on simulated radiographs: +2 mm in depth and +0.5 degree out of plane at 1 mm pitch),
while each small patch sees an almost constant gain and the bias disappears. ``patch_px=None`` is the
classic global measure.

Both measures are torch functions, batched over the moving images ``(B, H, W)`` and differentiable. An
optional region-of-interest mask ``(H, W)`` restricts the pixels that count (for GC a gradient counts only
when its whole 3x3 Sobel neighbourhood is inside the mask; a patch counts when at least half of it is).
A gradient-free (constant) image, or patch, has no variance: its correlation is 0, never NaN. The fixed
image's statistics are computed once, so scoring a CMA-ES population costs one pass over its images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError

FLAT_RELATIVE_STD = 1e-3
"""A patch whose standard deviation is below this fraction of its image's global one counts as flat: its
correlation is 0. Why: the correlation of an almost flat patch is decided by round-off or faint tails and
jumps between -1 and 1 under tiny changes (a DRR's empty air, a far blob tail)."""
MIN_PATCH_COVERAGE = 0.5
"""Fraction of a patch that must lie inside the ROI mask for the patch to count."""


def sobel_gradients(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Column and row derivatives (per pixel) of images ``(..., H, W)``: two tensors ``(..., H-2, W-2)``
    (valid region: no padding, so the image border creates no false edge). Separable Sobel
    (``[1, 2, 1] / 4`` smoothing times ``[-1, 0, 1] / 2`` central difference), written with slices: faster
    than a float64 convolution on the CPU."""
    smooth_rows = (images[..., :-2, :] + 2.0 * images[..., 1:-1, :] + images[..., 2:, :]) / 4.0
    smooth_cols = (images[..., :, :-2] + 2.0 * images[..., :, 1:-1] + images[..., :, 2:]) / 4.0
    gx = (smooth_rows[..., :, 2:] - smooth_rows[..., :, :-2]) / 2.0
    gy = (smooth_cols[..., 2:, :] - smooth_cols[..., :-2, :]) / 2.0
    return gx, gy


def _as_tensor(image, dtype=torch.float64, device=None) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image.to(dtype=dtype, device=device if device is not None else image.device)
    return torch.as_tensor(np.asarray(image), dtype=dtype, device=device)


def _check_mask(mask, shape: tuple[int, int]) -> torch.Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.bool)
    mask = _as_tensor(mask, torch.bool).cpu()
    if tuple(mask.shape) != tuple(shape):
        raise InputError(
            None,
            f"ROI mask shape {tuple(mask.shape)} differs from the image's {tuple(shape)}",
            "give a mask on the radiograph's pixel grid",
        )
    return mask


class _LocalCorrelation:
    """Pearson correlation of moving images with one fixed image, per patch, averaged over the patches
    where the fixed image varies. Weighted by a 0/1 pixel mask. Fixed statistics are precomputed.

    Every image is first centred on its global (masked) mean, so an offset costs no precision. A patch
    is flat (correlation 0; for the fixed image: not counted) when its standard deviation is below
    :data:`FLAT_RELATIVE_STD` of the image's global one, or at round-off level."""

    def __init__(self, fixed: torch.Tensor, weights: torch.Tensor, patch_px: int | None):
        rows, cols = fixed.shape
        coverage = MIN_PATCH_COVERAGE
        if patch_px is None or patch_px >= max(rows, cols):
            self.kernel, self.stride = (rows, cols), (1, 1)
            coverage = 1e-9  # one global "patch": any pixel in the mask counts
        else:
            size = max(2, int(patch_px))
            self.kernel = (min(size, rows), min(size, cols))
            self.stride = (max(1, self.kernel[0] // 2), max(1, self.kernel[1] // 2))
        self.weights = weights.to(fixed.dtype)[None, None]
        self.total = self.weights.sum().clamp_min(1.0)
        self.count = self._pool(self.weights)
        fixed = self._centred(fixed[None, None])
        mean, variance, flat = self._statistics(fixed)
        self.valid = (self.count >= coverage) & ~flat
        self.patches = int(self.valid.sum())
        self.fixed_weighted = self.weights * fixed
        self.mean = mean
        self.std = variance.sqrt()

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over each patch of (N, 1, H, W) -> (N, 1, patches_rows, patches_cols)."""
        return F.avg_pool2d(x, self.kernel, self.stride)

    def _centred(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) minus each image's mean inside the mask."""
        mean = (self.weights * images).sum(dim=(-1, -2), keepdim=True) / self.total
        return images - mean

    def _statistics(self, centred: torch.Tensor):
        """Per-patch mean and variance of centred images (N, 1, H, W), and which patches are flat."""
        count = self.count.clamp_min(1e-12)
        weighted = self.weights * centred
        mean = self._pool(weighted) / count
        variance = (self._pool(weighted * centred) / count - mean**2).clamp_min(0.0)
        with torch.no_grad():
            global_std = ((weighted * centred).sum(dim=(-1, -2), keepdim=True) / self.total).sqrt()
            round_off = 1e-6 * weighted.abs().amax(dim=(-1, -2), keepdim=True)
            flat = variance.sqrt() <= torch.maximum(FLAT_RELATIVE_STD * global_std, round_off)
        return mean, variance, flat

    def __call__(self, moving: torch.Tensor) -> torch.Tensor:
        """Mean patch correlation (...,) of moving images (..., H, W); 0 where a patch is flat."""
        batch_shape = moving.shape[:-2]
        if self.patches == 0:
            return torch.zeros(batch_shape, dtype=moving.dtype, device=moving.device)
        moving = self._centred(moving.reshape(-1, 1, *moving.shape[-2:]))
        mean, variance, flat = self._statistics(moving)
        covariance = self._pool(self.fixed_weighted * moving) / self.count.clamp_min(1e-12) - self.mean * mean
        flat = flat | ~self.valid
        product = torch.where(flat, torch.ones_like(variance), variance * self.std**2)
        denominator = product.sqrt()  # never the square root of 0: no infinite gradient, no NaN
        correlation = torch.where(flat, torch.zeros_like(covariance), covariance / denominator)
        mean_correlation = correlation.sum(dim=(1, 2, 3)) / self.patches
        return mean_correlation.reshape(batch_shape)


class GradientCorrelation:
    """GC of moving images against a fixed image (e.g. the radiograph), optionally in a 2D ROI mask.

    fixed: (H, W). mask: optional (H, W) bool, True where pixels count. patch_px: side of the correlation
    patches in pixels (None: one global correlation). Call with (H, W) or (B, H, W) moving images (any
    float dtype; computed in float64) -> () or (B,) in [-1, 1], differentiable.
    """

    name = "gc"

    def __init__(self, fixed, mask=None, patch_px: int | None = None, device=None):
        fixed = _as_tensor(fixed, device=device)
        if fixed.ndim != 2 or min(fixed.shape) < 4:
            raise InputError(
                None,
                f"the fixed image must be 2D and at least 4x4 pixels, got {tuple(fixed.shape)}",
                "give a single 2D radiograph",
            )
        self.shape = tuple(fixed.shape)
        mask = _check_mask(mask, self.shape)
        inside = F.conv2d(mask.to(torch.float64)[None, None], torch.ones(1, 1, 3, 3, dtype=torch.float64))
        weights = (inside[0, 0] > 8.5).to(fixed.device)  # whole Sobel neighbourhood in the mask
        gx, gy = sobel_gradients(fixed)
        self._x = _LocalCorrelation(gx, weights, patch_px)
        self._y = _LocalCorrelation(gy, weights, patch_px)
        self.patch_px = patch_px

    @property
    def fixed_is_flat(self) -> bool:
        """True when the fixed image has no gradient in the mask (registration is then meaningless)."""
        return self._x.patches == 0 and self._y.patches == 0

    def __call__(self, moving) -> torch.Tensor:
        moving = _as_tensor(moving, device=self._x.weights.device)
        gx, gy = sobel_gradients(moving)
        return 0.5 * (self._x(gx) + self._y(gy))


class NormalisedCrossCorrelation:
    """NCC of moving images against a fixed image (same interface as :class:`GradientCorrelation`)."""

    name = "ncc"

    def __init__(self, fixed, mask=None, patch_px: int | None = None, device=None):
        fixed = _as_tensor(fixed, device=device)
        if fixed.ndim != 2 or min(fixed.shape) < 2:
            raise InputError(None, f"the fixed image must be 2D, got {tuple(fixed.shape)}", "give a 2D radiograph")
        self.shape = tuple(fixed.shape)
        self._c = _LocalCorrelation(fixed, _check_mask(mask, self.shape).to(fixed.device), patch_px)
        self.patch_px = patch_px

    @property
    def fixed_is_flat(self) -> bool:
        return self._c.patches == 0

    def __call__(self, moving) -> torch.Tensor:
        return self._c(_as_tensor(moving, device=self._c.weights.device))


SIMILARITIES = {"gc": GradientCorrelation, "ncc": NormalisedCrossCorrelation}
"""Similarity measures by name (the ``--similarity`` choices)."""


def make_similarity(name: str, fixed, mask=None, patch_px: int | None = None, device=None):
    """The similarity measure ``name`` ("gc" or "ncc") against the fixed image."""
    if name not in SIMILARITIES:
        raise InputError(None, f"unknown similarity {name!r}", f"use one of {', '.join(SIMILARITIES)}")
    return SIMILARITIES[name](fixed, mask, patch_px, device)


def gradient_correlation(fixed, moving, mask=None, patch_px: int | None = None) -> torch.Tensor:
    """GC of ``moving`` (H, W) or (B, H, W) against ``fixed`` (H, W): () or (B,) in [-1, 1]."""
    return GradientCorrelation(fixed, mask, patch_px)(moving)


def normalised_cross_correlation(fixed, moving, mask=None, patch_px: int | None = None) -> torch.Tensor:
    """NCC of ``moving`` (H, W) or (B, H, W) against ``fixed`` (H, W): () or (B,) in [-1, 1]."""
    return NormalisedCrossCorrelation(fixed, mask, patch_px)(moving)
