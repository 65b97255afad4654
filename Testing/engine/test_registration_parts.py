"""Parts of the registration pipeline: resolution levels, windows, exposed field, optimisers, FFT search, quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmdgan.io import Volume, VolumeGeometry
from bmdgan.projection import Projector, default_ap_geometry
from bmdgan.projection.geometry import ap_pose
from bmdgan.registration.global_search import masked_ncc_map
from bmdgan.registration.levels import (
    beam_axis,
    detector_factor,
    downsample_geometry,
    downsample_image,
    downsample_mask,
    pool_volume,
    volume_factors,
)
from bmdgan.registration.optimiser import adam_refine, cmaes_search
from bmdgan.registration.quality import assess_quality
from bmdgan.registration.roi import bone_window, crop_geometry, exposed_field, inside_fraction


@pytest.fixture(scope="module")
def blob_scene():
    """Two Gaussian blobs (mg/cm3) on a 2 mm grid and a 1 mm-pitch AP detector."""
    k, j, i = np.indices((30, 36, 40)).astype(float)
    x, y, z = i * 2.0, j * 2.0, k * 2.0
    values = 800.0 * np.exp(-((x - 30) ** 2 + (y - 40) ** 2 + (z - 25) ** 2) / (2 * 6.0**2))
    values += 500.0 * np.exp(-((x - 55) ** 2 + (y - 30) ** 2 + (z - 40) ** 2) / (2 * 4.0**2))
    volume = Volume(values.astype(np.float32), VolumeGeometry((2.0, 2.0, 2.0), (0.0, 0.0, 0.0)), unit="mg/cm3")
    geometry = default_ap_geometry(volume, pixel_spacing_mm=1.0)
    return volume, geometry


def _centroid(image: np.ndarray) -> np.ndarray:
    rows, cols = np.indices(image.shape)
    return np.array([(image * cols).sum(), (image * rows).sum()]) / image.sum()


def test_downsampled_detector_sees_the_same_image(blob_scene):
    volume, geometry = blob_scene
    projector = Projector.from_volume(volume)
    full = projector.project(geometry)[0]
    for factor in (2, 3):
        coarse_geometry = downsample_geometry(geometry, factor)
        coarse = projector.project(coarse_geometry)[0]
        binned = downsample_image(full, factor)
        assert coarse.shape == binned.shape
        # same object position: centroids agree to a small fraction of a coarse pixel
        np.testing.assert_allclose(_centroid(coarse), _centroid(binned), atol=0.03)
        assert np.abs(coarse - binned).max() < 0.03 * full.max()
    assert detector_factor(geometry, 4.0) == 4 and detector_factor(geometry, 0.3) == 1


def test_pooled_volume_keeps_mass_and_position(blob_scene):
    volume, geometry = blob_scene
    matrix = volume.geometry.ijk_to_lps()
    pooled, pooled_matrix = pool_volume(volume.array, matrix, (3, 4, 2))
    assert pooled.shape == (15, 9, 14)

    def mass_centre(array, ijk_to_lps):
        k, j, i = np.indices(array.shape)
        points = np.stack([i, j, k, np.ones_like(i)], axis=-1) @ ijk_to_lps.T
        return (points[..., :3] * array[..., None]).sum(axis=(0, 1, 2)) / array.sum()

    # block centres carry the block means: the centre of mass stays (to float32 round-off, mm)
    np.testing.assert_allclose(mass_centre(pooled, pooled_matrix), mass_centre(volume.array, matrix), atol=0.01)
    assert pooled.sum() * abs(np.linalg.det(pooled_matrix[:3, :3])) == pytest.approx(
        volume.array.sum() * abs(np.linalg.det(matrix[:3, :3])), rel=1e-5
    )
    drr_full = Projector(volume.array, matrix, unit="mg/cm3").project(geometry)[0]
    drr_pooled = Projector(pooled, pooled_matrix, unit="mg/cm3").project(geometry)[0]
    assert drr_pooled.sum() == pytest.approx(drr_full.sum(), rel=0.01)
    np.testing.assert_allclose(_centroid(drr_pooled), _centroid(drr_full), atol=0.05)


def test_beam_axis_and_pooling_factors():
    identity = np.eye(4)
    assert beam_axis(identity, ap_pose(np.zeros(3), 800.0)) == 1  # AP beam runs along LPS y = index j
    lateral = ap_pose(np.zeros(3), 800.0)
    lateral[:3, :3] = lateral[:3, :3] @ np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert beam_axis(identity, lateral) == 0
    assert volume_factors((0.977, 0.977, 3.27), 1, 1.6) == (2, 7, 1)
    assert volume_factors((3.0, 3.0, 3.0), 1, 0.8) == (1, 1, 1)


def test_cropped_detector_gives_the_same_pixels(blob_scene):
    volume, geometry = blob_scene
    projector = Projector.from_volume(volume)
    full = projector.project(geometry)[0]
    box = (5, 40, 12, 50)
    cropped = projector.project(crop_geometry(geometry, box))[0]
    np.testing.assert_allclose(cropped, full[5:40, 12:50], rtol=1e-5, atol=1e-7)
    points = np.array([[30.0, 40.0, 25.0], [55.0, 30.0, 40.0]])
    window = bone_window(geometry, points, margin_mm=5.0)
    projected = geometry.project_points(points)
    row0, row1, col0, col1 = window
    assert col0 <= projected[:, 0].min() - 5 and col1 > projected[:, 0].max() + 5
    assert row0 <= projected[:, 1].min() - 5 and row1 > projected[:, 1].max() + 5
    assert inside_fraction(geometry, points) == 1.0
    assert inside_fraction(geometry, points + np.array([1000.0, 0.0, 0.0])) == 0.0


def test_exposed_field_finds_a_collimation_border():
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 10.0, (120, 160))
    assert exposed_field(image).collimated_fraction == 0.0
    collimated = image.copy()
    collimated[:25, :] = 4000.0  # top shutter
    collimated[:, 130:] = 4000.0  # right shutter
    field = exposed_field(collimated)
    row0, row1, col0, col1 = field.box
    assert row0 == 25 + 3 and row1 == 120 and col0 == 0 and col1 == 130 - 3
    assert not field.mask[:28].any() and not field.mask[:, 127:].any() and field.mask[28:, :127].all()
    assert field.collimated_fraction == pytest.approx(1 - (92 * 127) / (120 * 160))
    assert downsample_mask(field.mask, 4).shape == (30, 40)


def test_cmaes_search_renders_whole_populations_and_finds_the_minimum():
    target = np.array([3.0, -2.0, 1.0, 12.0, -7.0, 20.0])
    scale = np.array([4.0, 4.0, 4.0, 8.0, 8.0, 16.0])
    batches = []

    def cost(rows: np.ndarray) -> np.ndarray:
        batches.append(rows.shape)
        return (((rows - target) / scale) ** 2).sum(axis=1)

    result = cmaes_search(
        cost, np.zeros(6), scale, population=10, max_generations=120, sigma=1.0, tolerance=1e-4, seed=3
    )
    np.testing.assert_allclose(result.parameters, target, atol=0.02)
    assert result.cost < 1e-5
    assert batches[0] == (1, 6) and all(shape == (10, 6) for shape in batches[1:-1])
    assert result.evaluations == 1 + 10 * result.iterations + 1
    bounded = cmaes_search(cost, np.zeros(6), scale, bounds=np.array([[-1.0, 1.0]] * 6), max_generations=60, seed=3)
    assert np.all(np.abs(bounded.parameters) <= 1.0 + 1e-9)
    assert bounded.parameters[5] == pytest.approx(1.0, abs=0.05)


def test_adam_refine_improves_and_never_returns_worse():
    target = torch.tensor([1.0, -1.0, 0.5, 2.0, -3.0, 4.0], dtype=torch.float64)

    def loss(parameters: torch.Tensor) -> torch.Tensor:
        return ((parameters - target) ** 2).sum()

    start = np.zeros(6)
    result = adam_refine(loss, start, np.ones(6), steps=30, learning_rate=0.2)
    assert result.cost < 0.5 * float(loss(torch.zeros(6, dtype=torch.float64)))
    assert all(a >= b for a, b in zip(result.history, result.history[1:]))
    at_minimum = adam_refine(loss, target.numpy(), np.ones(6), steps=3, learning_rate=0.5)
    np.testing.assert_allclose(at_minimum.parameters, target.numpy())


def test_masked_ncc_map_finds_a_template_and_ignores_masked_pixels():
    rng = np.random.default_rng(5)
    image = rng.normal(size=(60, 70))
    template = image[20:35, 30:52].copy()
    mask = np.ones(image.shape, dtype=bool)
    ncc, overlap = masked_ncc_map(image, mask, template)
    row, col = np.unravel_index(np.argmax(ncc), ncc.shape)
    assert (row - template.shape[0] + 1, col - template.shape[1] + 1) == (20, 30)
    assert ncc[row, col] == pytest.approx(1.0, abs=1e-9) and overlap[row, col] == pytest.approx(1.0)
    spoiled = image.copy()
    spoiled[20:35, 30:40] = 50.0
    mask[20:35, 30:40] = False
    ncc, _ = masked_ncc_map(spoiled, mask, template)
    assert ncc[row, col] == pytest.approx(1.0, abs=1e-9)


def test_quality_flag_and_messages():
    good = assess_quality(0.72, bone_volume_cm3=150.0, bone_in_view=0.99)
    assert good.flag == "good" and good.good and "0.720" in good.messages[0]
    checks = {
        "almost no bone": dict(bone_volume_cm3=3.0),
        "below 0.4": dict(gradient_correlation=0.2),
        "inside the exposed field": dict(bone_in_view=0.5),
        "landmarks are 25.0 mm": dict(landmark_residual_mm=25.0),
        "no edges": dict(fixed_is_flat=True),
    }
    for text, change in checks.items():
        arguments = dict(gradient_correlation=0.72, bone_volume_cm3=150.0, bone_in_view=0.99)
        arguments.update(change)
        quality = assess_quality(arguments.pop("gradient_correlation"), **arguments)
        assert quality.flag == "failed" and text in quality.messages[1], (text, quality.messages)
        assert quality.messages[0].startswith("likely cause: ")
    data = good.to_dict()
    assert data["thresholds"]["good_gradient_correlation"] == 0.5 and data["flag"] == "good"
    assert data["thresholds"]["failed_gradient_correlation"] == 0.4 and data["cause"] is None
