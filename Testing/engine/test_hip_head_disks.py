"""Head disks: the detector's optional maps of each femoral head's projected outline (filled). Analytic discs: their
targets, their loss, reading a head centre from one, and a detector trained with them keeping its format."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from bmdgan.detection.detector import DISK_SEARCH_PX, HipDetector, disk_centre
from bmdgan.detection.landmark_folder import LandmarkView, add_view, read_views
from bmdgan.detection.layout import CHANNELS, HEAD_DISKS
from bmdgan.detection.training import (
    PATCH_PX,
    detector_loss,
    disk_target,
    head_disk_loss,
    landmark_loss,
    train_detector,
    training_sample,
)
from bmdgan.errors import InputError


def test_a_disk_target_has_the_area_and_centre_of_its_circle():
    target = disk_target((80, 90), 40.3, 37.6, 12.5)
    assert target.sum() == pytest.approx(math.pi * 12.5**2, rel=0.01)
    rows, columns = np.indices(target.shape)
    centroid = ((target * columns).sum() / target.sum(), (target * rows).sum() / target.sum())
    assert centroid == pytest.approx((40.3, 37.6), abs=0.02)


def _view(head_radius_mm):
    """A view of a bright disc of 20 mm radius (0.8 mm pixels) at the right head landmark, the neck beside it."""
    shape, spacing = (500, 400), (0.8, 0.8)
    head = (150.0, 200.0)
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = np.where((columns - head[0]) ** 2 + (rows - head[1]) ** 2 < 25.0**2, 2.0, 0.0).astype(np.float32)
    landmarks = {name: None for name in CHANNELS} | {"head_right": list(head), "neck_right": [100.0, 200.0]}
    return image, LandmarkView("v", "CT", "hip", spacing, landmarks, head_radius_mm=head_radius_mm)


def test_training_windows_draw_each_head_as_a_disc_of_its_radius_on_its_side():
    """In every window that holds the head: its disc lies on the bright disc of the image (the radius over the
    window's 2 mm pixels, scaled by at most 10 %), on the right disk channel, or the left one when mirrored."""
    image, view = _view({"right": 20.0})
    rng = np.random.default_rng(5)
    sides, checked = set(), 0
    while checked < 10:
        inputs, targets = training_sample(image, view, rng, head_disks=True)
        assert targets.shape == (len(CHANNELS) + len(HEAD_DISKS), PATCH_PX, PATCH_PX)
        disks = targets[len(CHANNELS) :]
        shown = [name for name, disk in zip(HEAD_DISKS, disks) if disk.sum() > 0]
        if not shown or disks.sum() < 0.95 * math.pi * (10 / 1.1) ** 2:
            continue  # a window without the whole head
        assert len(shown) == 1
        sides.add(shown[0].removeprefix("head_disk_"))
        disk = disks[HEAD_DISKS.index(shown[0])]
        radius_px = math.sqrt(disk.sum() / math.pi)
        assert 20.0 / 2.0 / 1.1 - 0.1 < radius_px < 20.0 / 2.0 / 0.9 + 0.1
        assert inputs[disk > 0.99].mean() > 0.5  # inside the bright disc (background -1)
        checked += 1
    assert sides == {"right", "left"}


def test_a_head_of_unknown_radius_is_not_learnt_as_a_disc():
    image, view = _view({})
    for _ in range(20):
        _, targets = training_sample(image, view, np.random.default_rng(_), head_disks=True)
        if targets[CHANNELS.index("head_right")].max() > 0.9 or targets[CHANNELS.index("head_left")].max() > 0.9:
            assert np.isnan(targets[len(CHANNELS) :]).any()
            return
    pytest.fail("no window held the head")


def test_head_disk_loss_is_small_for_the_disc_large_for_its_complement_and_skips_unknown_maps():
    import torch

    disc = (torch.from_numpy(disk_target((64, 64), 30.0, 30.0, 10.0)) > 0.5).float()[None, None]
    right = torch.where(disc > 0.5, 12.0, -12.0)
    assert float(head_disk_loss(right, disc)) < 0.01
    assert float(head_disk_loss(-right, disc)) > 5.0
    unknown = torch.full_like(disc, float("nan"))
    both = head_disk_loss(torch.cat([right, -right], 1), torch.cat([disc, unknown], 1))
    assert float(both) == pytest.approx(float(head_disk_loss(right, disc)))
    assert float(head_disk_loss(right, unknown)) == 0.0


def test_the_detector_loss_adds_the_weighted_disk_loss_to_the_landmarks():
    import torch

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, len(CHANNELS) + len(HEAD_DISKS), 16, 16, generator=generator)
    absent = torch.randn(2, len(CHANNELS), generator=generator)
    targets = torch.rand(2, len(CHANNELS) + len(HEAD_DISKS), 16, 16, generator=generator)
    maps = len(CHANNELS)
    landmarks = landmark_loss(logits[:, :maps], absent, targets[:, :maps])
    disks = head_disk_loss(logits[:, maps:], targets[:, maps:])
    assert float(detector_loss(logits, absent, targets, 0.1)) == pytest.approx(float(landmarks + 0.1 * disks))
    assert float(detector_loss(logits[:, :maps], absent, targets[:, :maps])) == pytest.approx(float(landmarks))


def test_disk_centre_reads_the_disc_near_the_peak_to_a_twentieth_of_a_pixel():
    probability = disk_target((96, 128), 40.4, 50.7, 12.0) * 0.9
    probability += disk_target((96, 128), 100.0, 30.0, 12.0) * 0.9  # the other hip's head
    assert disk_centre(probability, (45.0, 48.0)) == pytest.approx((40.4, 50.7), abs=0.05)
    assert disk_centre(probability, (98.0, 34.0)) == pytest.approx((100.0, 30.0), abs=0.05)
    beside = 40.4 + 12.0 + DISK_SEARCH_PX - 1.0  # within the search distance of the disc's edge
    assert disk_centre(probability, (beside, 50.7)) == pytest.approx((40.4, 50.7), abs=0.05)
    assert disk_centre(probability, (40.4 + 12.0 + DISK_SEARCH_PX + 2.0, 80.0)) is None
    assert disk_centre(np.zeros((32, 32)), (10.0, 10.0)) is None


def test_a_detector_trained_with_head_disks_reads_heads_from_its_discs(tmp_path):
    """Two epochs on synthetic hips: the folder records the disks, loads with six maps and reads by disc; views
    without head radii are refused with what to do."""
    import torch

    torch.set_num_threads(1)
    image, view = _view({"right": 20.0})
    views = []
    for index in range(4):
        named = LandmarkView(f"v{index}", "CT", "hip", view.pixel_spacing_mm, view.landmarks, None, (), {"right": 20.0})
        add_view(tmp_path / "views", named, image)
        views.append(named)
    assert read_views(tmp_path / "views")[0].head_radius_mm == {"right": 20.0}
    train_detector(
        tmp_path / "views", views, tmp_path / "detector", epochs=2, samples_per_view=2, progress=False, head_disks=0.5
    )
    detector = HipDetector.load(tmp_path / "detector")
    assert detector.description["head_disks"] is True and detector.description["head_disk_weight"] == 0.5
    assert detector.head_reading == "disk"
    logits, absent, _ = detector.heatmaps(image, view.pixel_spacing_mm)
    assert logits.shape[0] == len(CHANNELS) + len(HEAD_DISKS) and absent.shape == (len(CHANNELS),)
    detector.detect(image, view.pixel_spacing_mm, min_confidence=0.0)  # reads by disc without error
    bare = [LandmarkView(v.id, v.ct, v.view, v.pixel_spacing_mm, v.landmarks) for v in views]
    with pytest.raises(InputError, match="no femoral head radius"):
        train_detector(tmp_path / "views", bare, tmp_path / "other", epochs=1, progress=False, head_disks=1.0)


def test_train_detector_cli_takes_head_disks():
    result = subprocess.run(
        [sys.executable, "-m", "bmdgan", "train-detector", "--help"], capture_output=True, text=True
    )
    assert "--head-disks" in result.stdout
