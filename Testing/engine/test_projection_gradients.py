"""Gradients of the DRR with respect to the six pose parameters match finite differences, also batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmdgan.io import Volume, VolumeGeometry
from bmdgan.projection import Projector, camera_pose, default_ap_geometry, volume_centre_lps


@pytest.fixture(scope="module")
def scene():
    """A smooth three-blob volume (float64 projector), a small detector and fixed random pixel weights."""
    spacing = np.array([2.0, 1.8, 2.2])
    k, j, i = np.indices((28, 30, 32)).astype(float)
    x, y, z = i * spacing[0], j * spacing[1], k * spacing[2]
    values = np.zeros_like(x)
    for (cx, cy, cz), sigma, weight in (
        ((30, 25, 30), 6.0, 1000.0),
        ((45, 35, 20), 4.0, 600.0),
        ((20, 30, 42), 5.0, 800.0),
    ):
        values += weight * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma**2))
    volume = Volume(values.astype(np.float32), VolumeGeometry(tuple(spacing), (0.0, 0.0, 0.0)), unit="mg/cm3")
    geometry = default_ap_geometry(volume, pixel_spacing_mm=2.5, columns=36, rows=36)
    projector = Projector.from_volume(volume, dtype=torch.float64)
    weights = torch.as_tensor(np.random.default_rng(1).random(geometry.shape), dtype=torch.float64)
    centre = volume_centre_lps(volume.shape_ijk, volume.geometry.ijk_to_lps())
    return projector, geometry, weights, centre


def _loss(scene, params):
    projector, geometry, weights, centre = scene
    pose = camera_pose(params, geometry.camera_from_lps, centre)
    image = projector.render(pose, geometry)
    return (image[..., 0, :, :] * weights).sum(dim=(-1, -2))


@pytest.mark.parametrize("start", [[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [-15.0, 10.0, 20.0, 3.0, -4.0, 25.0]])
def test_pose_gradient_matches_finite_differences(scene, start):
    params = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    loss = _loss(scene, params)
    (gradient,) = torch.autograd.grad(loss, params)
    numeric = torch.zeros(6, dtype=torch.float64)
    # degrees or mm; small because bilinear interpolation makes the image piecewise linear in the pose:
    # wider steps straddle the kinks (at 1e-2 the difference quotient is off by up to 15%, at 1e-5 by < 1e-5)
    step = 1e-5
    with torch.no_grad():
        for index in range(6):
            delta = torch.zeros(6, dtype=torch.float64)
            delta[index] = step
            numeric[index] = (_loss(scene, params + delta) - _loss(scene, params - delta)) / (2 * step)
    assert torch.all(gradient.abs() > 1e-6)  # every parameter moves the image
    torch.testing.assert_close(gradient, numeric, rtol=1e-3, atol=1e-4 * numeric.abs().max().item())


def test_batched_population_gives_the_same_values_and_gradients(scene):
    population = torch.tensor(
        [[0, 0, 0, 0, 0, 0], [5, 3, -2, 1, 0, 4], [-10, 6, 12, -2, 3, -8], [2, -15, 4, 0, -1, 10]],
        dtype=torch.float64,
        requires_grad=True,
    )
    losses = _loss(scene, population)
    assert losses.shape == (4,)
    (batched_gradient,) = torch.autograd.grad(losses.sum(), population)
    for index in range(4):
        single = population[index].detach().clone().requires_grad_(True)
        loss = _loss(scene, single)
        (gradient,) = torch.autograd.grad(loss, single)
        torch.testing.assert_close(loss, losses[index].detach())
        torch.testing.assert_close(gradient, batched_gradient[index])
