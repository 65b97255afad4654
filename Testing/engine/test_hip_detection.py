"""The hip detector: its geometry (analytic), its training windows, its folder format, and the bundled detector on
real-CT radiographs: the demo's sample, an AP pelvis of a whole-pelvis CT, and an image with no hip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmdgan.detection.detector import (
    DETECTOR_MM_PER_PX,
    HEATMAP_SIGMA_PX,
    HipDetector,
    detector_grid,
    heatmap_peak,
)
from bmdgan.detection.landmark_folder import LandmarkView, add_view, read_views
from bmdgan.detection.layout import CHANNELS
from bmdgan.detection.training import PATCH_PX, training_sample


def _gaussian(shape, column, row, sigma=HEATMAP_SIGMA_PX):
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((columns - column) ** 2 + (rows - row) ** 2) / (2 * sigma**2))


def test_heatmap_peak_finds_a_landmark_to_a_tenth_of_a_pixel():
    column, row, value = heatmap_peak(_gaussian((64, 80), 20.3, 31.7))
    assert (column, row) == pytest.approx((20.3, 31.7), abs=0.1) and value == pytest.approx(1.0, abs=0.05)


def test_detector_grid_is_two_millimetres_and_maps_back_to_source_pixels():
    """A 0.5 mm radiograph of 1001 x 801 pixels: 2 mm pixels are 4 source pixels, the grid is padded to 16, and
    detector pixel (0, 0) covers source pixels 0-3 (its centre at 1.5)."""
    matrix, shape = detector_grid((1001, 801), (0.5, 0.5))
    assert shape == (256, 208)  # ceil(250.25 / 16) * 16, ceil(200.25 / 16) * 16
    assert matrix[0, 0] == matrix[1, 1] == pytest.approx(DETECTOR_MM_PER_PX / 0.5)
    assert (matrix @ [0.0, 0.0, 1.0])[:2] == pytest.approx([1.5, 1.5])


def test_training_windows_put_their_targets_on_the_landmarks_and_mirror_the_sides():
    """A view with a bright 'head' disc and a dimmer 'neck' disc at their labelled places: in every random window
    (turned, scaled, mirrored), the head target peaks on the bright disc and the neck target on the dim one, both
    on one side; mirrored windows carry them on the other side's channels."""
    shape, spacing = (500, 400), (0.8, 0.8)
    head, neck = (150.0, 200.0), (100.0, 200.0)
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = np.zeros(shape, np.float32)
    image[(columns - head[0]) ** 2 + (rows - head[1]) ** 2 < 12**2] = 2.0
    image[(columns - neck[0]) ** 2 + (rows - neck[1]) ** 2 < 8**2] = 1.0
    landmarks = {name: None for name in CHANNELS}
    landmarks.update(head_right=list(head), neck_right=list(neck))
    view = LandmarkView("v", "CT", "hip", spacing, landmarks)
    sides_seen = set()
    rng = np.random.default_rng(3)
    checked = 0
    while checked < 12:
        inputs, targets = training_sample(image, view, rng)
        assert inputs.shape == (PATCH_PX, PATCH_PX) and targets.shape == (len(CHANNELS), PATCH_PX, PATCH_PX)
        present = [name for name, target in zip(CHANNELS, targets) if target.max() > 0.9]
        if len(present) != 2:
            continue  # a window that does not hold both discs
        side = present[0].split("_")[1]
        assert present == [f"head_{side}", f"neck_{side}"]
        sides_seen.add(side)
        peaks = {}
        for name in ("head", "neck"):
            column, row, _ = heatmap_peak(targets[CHANNELS.index(f"{name}_{side}")])
            patch = inputs[int(round(row)) - 1 : int(round(row)) + 2, int(round(column)) - 1 : int(round(column)) + 2]
            assert patch.mean() > 0.0  # on its disc (the background is -1)
            peaks[name] = np.array([column, row])
        distance_mm = np.hypot(*(peaks["head"] - peaks["neck"])) * DETECTOR_MM_PER_PX
        assert distance_mm == pytest.approx(40.0, rel=0.12)  # 50 px at 0.8 mm, scaled by at most 10 %
        checked += 1
    assert sides_seen == {"left", "right"}


def test_landmark_folder_resumes_after_a_torn_line(tmp_path):
    view = LandmarkView("a", "CT", "hip", (1.0, 1.0), {name: None for name in CHANNELS})
    add_view(tmp_path, view, np.zeros((4, 4)))
    with open(tmp_path / "views.jsonl", "a") as handle:
        handle.write('{"id": "b", "ct"')  # a run killed while writing
    add_view(tmp_path, LandmarkView("c", "CT", "thigh", (1.0, 1.0), view.landmarks), np.ones((4, 4)))
    assert [v.id for v in read_views(tmp_path)] == ["a", "c"]


# ------------------------------------------------------------------------------- the bundled detector
def test_bundled_detector_finds_the_samples_hip(shared_data):
    """The demo's sample (a right hip and upper thigh simulated from STS_012): one hip, the right one, with the
    head centre within 5 mm of the CT's projected head centre."""
    from bmdgan.io import read_radiograph
    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir

    path = sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH
    truth = json.loads(path.with_name(path.stem + "_truth.json").read_text())
    radiograph = read_radiograph(path)
    hips = HipDetector.load().detect(radiograph.pixels, radiograph.pixel_spacing_mm)
    assert [hip.side for hip in hips] == ["right"]
    error = np.subtract(hips[0].head_centre_px, truth["femoral_head_centre_px"]) * radiograph.pixel_spacing_mm[::-1]
    assert np.hypot(*error) < 5.0
