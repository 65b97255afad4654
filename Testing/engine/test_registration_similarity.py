"""Similarity measures of 2D-3D registration: GC and NCC values, invariances, masks, flat images, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmdgan.errors import InputError
from bmdgan.registration.similarity import (
    GradientCorrelation,
    NormalisedCrossCorrelation,
    gradient_correlation,
    make_similarity,
    normalised_cross_correlation,
    sobel_gradients,
)

PATCHES = [None, 12]


def _blobs(shift_px: float = 0.0, shape=(64, 80)) -> np.ndarray:
    """Smooth test image: two Gaussian blobs and a soft edge, shifted right by ``shift_px`` pixels."""
    rows, cols = np.indices(shape).astype(float)
    cols = cols - shift_px
    image = 3.0 * np.exp(-((rows - 25) ** 2 + (cols - 30) ** 2) / 60.0)
    image += 2.0 * np.exp(-((rows - 40) ** 2 + (cols - 55) ** 2) / 30.0)
    image += 1.0 / (1.0 + np.exp(-(cols - 45) / 2.0))
    return image


def test_sobel_gradient_of_a_ramp_is_its_slope_per_pixel():
    rows, cols = np.indices((10, 12)).astype(float)
    gx, gy = sobel_gradients(torch.as_tensor(2.0 * cols - 0.5 * rows))
    assert gx.shape == (8, 10)
    torch.testing.assert_close(gx, torch.full((8, 10), 2.0, dtype=torch.float64))
    torch.testing.assert_close(gy, torch.full((8, 10), -0.5, dtype=torch.float64))


@pytest.mark.parametrize("patch", PATCHES)
def test_identical_images_give_one_and_gain_offset_do_not_matter(patch):
    image = _blobs()
    assert float(gradient_correlation(image, image, patch_px=patch)) == pytest.approx(1.0, abs=1e-9)
    assert float(gradient_correlation(image, 5.0 * image - 2.0, patch_px=patch)) == pytest.approx(1.0, abs=1e-9)
    assert float(normalised_cross_correlation(image, image, patch_px=patch)) == pytest.approx(1.0, abs=1e-9)
    assert float(normalised_cross_correlation(image, 0.1 * image + 7.0, patch_px=patch)) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("patch", PATCHES)
def test_inverted_image_is_negative(patch):
    image = _blobs()
    assert float(gradient_correlation(image, -image, patch_px=patch)) == pytest.approx(-1.0, abs=1e-9)
    assert float(normalised_cross_correlation(image, 100.0 - image, patch_px=patch)) == pytest.approx(-1.0, abs=1e-9)
    # a partly inverted image (one blob inverted) is still below 1 but above -1
    partly = _blobs() - 2.0 * 3.0 * np.exp(
        -((np.indices(image.shape)[0] - 25) ** 2 + (np.indices(image.shape)[1] - 30) ** 2) / 60.0
    )
    value = float(gradient_correlation(image, partly, patch_px=patch))
    assert -0.9 < value < 0.9


@pytest.mark.parametrize("patch", PATCHES)
def test_gradient_free_images_give_zero_not_nan_with_finite_gradients(patch):
    image = _blobs()
    constant = np.full(image.shape, 3.7)
    for measure in (GradientCorrelation, NormalisedCrossCorrelation):
        moving = torch.tensor(np.stack([image, constant, np.zeros(image.shape)]), requires_grad=True)
        values = measure(image, patch_px=patch)(moving)
        assert values.shape == (3,)
        assert values[0].item() == pytest.approx(1.0, abs=1e-9)
        assert values[1].item() == 0.0 and values[2].item() == 0.0
        values.sum().backward()
        assert torch.all(torch.isfinite(moving.grad))
        flat_fixed = measure(constant, patch_px=patch)
        assert flat_fixed.fixed_is_flat
        assert float(flat_fixed(image)) == 0.0


def test_similarity_falls_with_misalignment():
    fixed = _blobs()
    measures = (GradientCorrelation(fixed), GradientCorrelation(fixed, patch_px=12), NormalisedCrossCorrelation(fixed))
    for measure in measures:
        values = measure(torch.as_tensor(np.stack([_blobs(s) for s in (0.0, 1.0, 2.0, 4.0, 8.0)])))
        assert np.all(np.diff(values.numpy()) < 0), values
        assert values[0].item() == pytest.approx(1.0) and values[-1].item() < 0.8


def test_batched_values_equal_single_values():
    fixed = _blobs()
    moving = np.stack([_blobs(s) + 0.01 * s for s in (0.5, 1.5, 3.0)])
    for patch in PATCHES:
        measure = GradientCorrelation(fixed, patch_px=patch)
        batched = measure(torch.as_tensor(moving))
        single = torch.stack([measure(torch.as_tensor(m)) for m in moving])
        torch.testing.assert_close(batched, single)


def test_roi_mask_ignores_pixels_outside():
    fixed = _blobs()
    moving = fixed.copy()
    moving[:, 60:] = np.random.default_rng(0).normal(size=(fixed.shape[0], fixed.shape[1] - 60))
    mask = np.zeros(fixed.shape, dtype=bool)
    mask[:, :59] = True  # the Sobel neighbourhood of column 58 ends at 59: untouched
    assert float(gradient_correlation(fixed, moving)) < 0.5
    assert float(gradient_correlation(fixed, moving, mask=mask)) == pytest.approx(1.0, abs=1e-9)
    assert float(gradient_correlation(fixed, moving, mask=mask, patch_px=12)) == pytest.approx(1.0, abs=1e-9)
    assert float(normalised_cross_correlation(fixed, moving, mask=mask)) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(InputError, match="ROI mask shape"):
        GradientCorrelation(fixed, mask=mask[:10])


def test_patch_gc_is_insensitive_to_a_smoothly_varying_gain():
    """A gain that changes across the image (like a tone curve compressing bright bone) barely moves patch GC
    from 1, while the global GC of the same pair drops: patches see an almost constant gain."""
    fixed = _blobs()
    cols = np.indices(fixed.shape)[1]
    gained = fixed * (0.2 + 1.6 * cols / cols.max())
    assert float(gradient_correlation(fixed, gained, patch_px=8)) > 0.97
    assert float(gradient_correlation(fixed, gained)) < float(gradient_correlation(fixed, gained, patch_px=8))


def test_gradient_with_respect_to_the_moving_image_matches_finite_differences():
    fixed = torch.as_tensor(_blobs())
    moving = torch.as_tensor(_blobs(1.3)).requires_grad_(True)
    measure = GradientCorrelation(fixed, patch_px=12)
    value = measure(moving)
    (gradient,) = torch.autograd.grad(value, moving)
    rng = np.random.default_rng(2)
    for _ in range(5):
        r, c = rng.integers(5, 60), rng.integers(5, 75)
        step = torch.zeros_like(moving)
        step[r, c] = 1e-6
        numeric = (measure(moving.detach() + step) - measure(moving.detach() - step)) / 2e-6
        assert gradient[r, c].item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-9)


def test_unknown_measure_and_bad_shapes_are_input_errors():
    with pytest.raises(InputError, match="unknown similarity"):
        make_similarity("mutual_information", _blobs())
    with pytest.raises(InputError, match="2D"):
        GradientCorrelation(np.zeros((3, 4, 5)))
