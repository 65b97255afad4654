"""The hip detector: its geometry (analytic), its training windows, its folder format, and the bundled detector on
real-CT radiographs: the demo's sample, an AP pelvis of a whole-pelvis CT, and an image with no hip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmdgan.cohort.generator import prepare_cts
from bmdgan.cohort.prepared_ct import load_prepared, prepared_bones, real_bones
from bmdgan.detection.detector import (
    DEFAULT_DETECTOR,
    DETECTOR_MM_PER_PX,
    HEATMAP_SIGMA_PX,
    DetectedHip,
    HipDetector,
    detector_grid,
    heatmap_peak,
    set_found_confidence,
)
from bmdgan.detection.landmark_folder import LandmarkView, add_view, read_image, read_views
from bmdgan.detection.landmark_views import simulate_landmark_views
from bmdgan.detection.layout import CHANNELS
from bmdgan.detection.refinement import REFINER_MM_PER_PX, REFINER_PATCH_PX, REFINER_SEARCH_MM, window_matrix
from bmdgan.detection.training import (
    PATCH_PX,
    offsets_by_ct,
    refiner_sample,
    summarise,
    threshold_sweep,
    training_sample,
    views_without,
)
from bmdgan.errors import InputError
from bmdgan.io import read_radiograph
from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir


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


def test_refinement_window_is_one_millimetre_around_its_centre_and_mirrors_a_left_hip():
    """At 0.25 mm source pixels a window pixel is 4 source pixels; its centre maps to the given point; mirrored,
    the window's first column lies on the point's right in the source."""
    centre = (400.0, 300.0)
    for mirror in (False, True):
        matrix = window_matrix(centre, (0.25, 0.25), mirror)
        middle = REFINER_PATCH_PX / 2.0
        assert (matrix @ [middle, middle, 1.0])[:2] == pytest.approx(centre)
        assert abs(matrix[0, 0]) == matrix[1, 1] == pytest.approx(REFINER_MM_PER_PX / 0.25)
        first_column = (matrix @ [0.0, middle, 1.0])[0]
        assert (first_column > centre[0]) == mirror


def test_refinement_windows_put_the_target_on_the_head_with_the_neck_on_the_windows_left():
    """A right hip (neck disc on the image's left of the head disc) and its mirror image labelled as a left hip:
    every refinement window's target peaks on the head disc, at most REFINER_SEARCH_MM (scaled) from the window's
    centre, and the neck disc lies to the window's left in both, as the refinement always sees a right hip."""
    shape, spacing = (500, 400), (0.5, 0.5)
    head, neck = (200.0, 250.0), (120.0, 250.0)
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = np.zeros(shape, np.float32)
    image[(columns - head[0]) ** 2 + (rows - head[1]) ** 2 < 40**2] = 2.0
    image[(columns - neck[0]) ** 2 + (rows - neck[1]) ** 2 < 15**2] = 1.0
    mirrored_image = np.ascontiguousarray(image[:, ::-1])
    last = shape[1] - 1
    cases = [
        (image, {"head_right": list(head), "neck_right": list(neck)}, "right"),
        (mirrored_image, {"head_left": [last - head[0], head[1]], "neck_left": [last - neck[0], neck[1]]}, "left"),
    ]
    rng = np.random.default_rng(5)
    for picture, labels, side in cases:
        landmarks = {name: None for name in CHANNELS} | labels
        view = LandmarkView("v", "CT", "hip", spacing, landmarks)
        for _ in range(6):
            inputs, target = refiner_sample(picture, view, side, rng)
            assert inputs.shape == (REFINER_PATCH_PX, REFINER_PATCH_PX) and target.shape == (1, *inputs.shape)
            column, row, value = heatmap_peak(target[0])
            assert value > 0.9  # a pixel within half a pixel of the peak: exp(-0.5 / 1.5**2) at worst
            assert inputs[int(round(row)), int(round(column))] > 0.5  # on the bright head disc
            off_mm = np.hypot(column - REFINER_PATCH_PX / 2, row - REFINER_PATCH_PX / 2) * REFINER_MM_PER_PX
            assert off_mm <= REFINER_SEARCH_MM * 1.1 + 1.0
            dim = (inputs > -0.5) & (inputs < 0.5)  # the neck disc's pixels
            assert dim.sum() > 100 and np.nonzero(dim)[1].mean() < column


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
    path = sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH
    truth = json.loads(path.with_name(path.stem + "_truth.json").read_text())
    radiograph = read_radiograph(path)
    hips = HipDetector.load().detect(radiograph.pixels, radiograph.pixel_spacing_mm)
    assert [hip.side for hip in hips] == ["right"]
    error = np.subtract(hips[0].head_centre_px, truth["femoral_head_centre_px"]) * radiograph.pixel_spacing_mm[::-1]
    assert np.hypot(*error) < 5.0


def test_a_detectors_own_threshold_decides_which_readings_are_hips(tmp_path):
    """The bundled detector, copied, on the demo's sample: a threshold set between the hip's confidence and 1
    reports no hip, just below it reports it; a threshold that is no probability is refused when set and when
    loaded."""
    import shutil

    radiograph = read_radiograph(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH)
    image, spacing = radiograph.pixels, radiograph.pixel_spacing_mm
    (hip,) = HipDetector.load().detect(image, spacing)
    folder = tmp_path / "detector"
    shutil.copytree(DEFAULT_DETECTOR, folder)
    set_found_confidence(folder, (hip.confidence + 1.0) / 2.0)
    assert HipDetector.load(folder).detect(image, spacing) == []
    set_found_confidence(folder, hip.confidence - 0.01)
    assert HipDetector.load(folder).found_confidence == pytest.approx(hip.confidence - 0.01)
    assert [found.side for found in HipDetector.load(folder).detect(image, spacing)] == ["right"]
    with pytest.raises(InputError, match="not a probability"):
        set_found_confidence(folder, 1.5)
    description = json.loads((folder / "hip_detector.json").read_text()) | {"found_confidence": 0.0}
    (folder / "hip_detector.json").write_text(json.dumps(description))
    with pytest.raises(InputError, match="not a probability in"):
        HipDetector.load(folder)


class _ScriptedReadings(HipDetector):
    """A detector whose readings of the image (marked by a bright first pixel) and of its mirror image are given."""

    def __init__(self, direct: dict, in_mirror: dict):
        super().__init__([], {}, None)
        self.direct, self.in_mirror = direct, in_mirror

    def _read(self, pixels, pixel_spacing_mm, side):
        readings = self.direct if pixels[0, 0] > 0 else self.in_mirror
        return {
            hip_side: hip for hip_side, hip in readings.items() if side not in ("left", "right") or hip_side == side
        }


def _hip(side, column, confidence):
    return DetectedHip(side, (column, 50.0), (column + (-40.0 if side == "right" else 40.0), 52.0), confidence, 0.9)


@pytest.mark.parametrize(
    "direct, in_mirror",
    [
        ({"right": _hip("right", 50.0, 0.6), "left": _hip("left", 65.0, 0.3)}, {}),  # one hip read twice, 15 mm apart
        ({"right": _hip("right", 50.0, 0.2), "left": _hip("left", 150.0, 0.7)}, {"left": _hip("left", 149.0, 0.4)}),
        ({"left": _hip("left", 150.0, 0.45)}, {"right": _hip("right", 48.0, 0.35), "left": _hip("left", 60.0, 0.1)}),
    ],
)
def test_reading_everything_then_thresholding_equals_thresholding(direct, in_mirror):
    """What the cross-validation relies on: for any threshold, the hips ``detect`` reports at it are those it
    reports at 0 whose confidence reaches it, with the same positions, whatever the merge of close readings, the
    one-hip hint or the side hint does."""
    image = np.zeros((100, 200), np.float32)
    image[0, 0] = 1.0  # the direct image; its mirror has the mark in the last column
    detector = _ScriptedReadings(direct, in_mirror)
    for side, one_hip in (("auto", False), ("auto", True), ("left", False)):
        everything = detector.detect(image, (1.0, 1.0), side, one_hip, min_confidence=0.0)
        for threshold in (0.05, 0.15, 0.25, 0.3, 0.35, 0.5, 0.65, 0.9):
            kept = detector.detect(image, (1.0, 1.0), side, one_hip, min_confidence=threshold)
            assert kept == [hip for hip in everything if hip.confidence >= threshold], (side, one_hip, threshold)


def test_cross_validation_counts_any_threshold_from_one_pass():
    """Rows of every reading (as evaluate_detector keeps them): a hip read at 0.3 and 2 mm off, one at 0.6 and
    7 mm off, one not read; a false hip at 0.2; a no-hip image read at 0.1. Each threshold counts what it keeps."""
    rows = [
        {"id": "a", "view": "hip", "kind": "hip", "confidence": 0.3, "head_error_mm": 2.0},
        {"id": "b", "view": "hip", "kind": "hip", "confidence": 0.6, "head_error_mm": 7.0},
        {"id": "c", "view": "ap-pelvis", "kind": "hip", "confidence": None},
        {"id": "a", "view": "hip", "kind": "false_hip", "confidence": 0.2},
        {"id": "d", "view": "no-hip", "kind": "no_hip", "confidences": [0.1]},
    ]
    for row in rows:
        if row.get("head_error_mm") is not None:
            row |= {"neck_error_mm": 1.0, "first_stage_head_error_mm": row["head_error_mm"]}
    at_half = summarise(rows)
    assert at_half["min_confidence"] == 0.5 and at_half["all"]["found"] == 1 and at_half["all"]["within_tolerance"] == 0
    assert at_half["ap-pelvis"]["found"] == 0 and at_half["false_hips"] == 0
    sweep = {point["min_confidence"]: point for point in threshold_sweep(rows, (0.05, 0.15, 0.25, 0.5, 0.7))}
    assert [sweep[t]["found"] for t in (0.05, 0.15, 0.25, 0.5, 0.7)] == [2, 2, 2, 1, 0]
    assert [sweep[t]["within_tolerance"] for t in (0.05, 0.15, 0.25, 0.5, 0.7)] == [1, 1, 1, 0, 0]
    assert [sweep[t]["false_hips"] for t in (0.05, 0.15, 0.25)] == [1, 1, 0]
    assert [sweep[t]["no_hip_images_with_a_detection"] for t in (0.05, 0.15)] == [1, 0]
    assert all(point["hips"] == 3 for point in sweep.values())


def test_offsets_by_ct_splits_a_shared_offset_from_the_scatter_about_it():
    """CT A's four AP hips sit 7 mm off in one direction (+/- 1 mm): none within 5 mm, all four without the shared
    offset. CT B's hips scatter 3 mm either way about its truth: its mean offset is 0, nothing changes. An unsure
    hip (below the threshold) and a hip not read count in neither."""

    def hip(ct, dx, dy, confidence=0.9):
        return {
            "ct": ct,
            "view": "ap-pelvis",
            "side": "right",
            "kind": "hip",
            "confidence": confidence,
            "head_offset_mm": [dx, dy],
            "head_error_mm": float(np.hypot(dx, dy)),
        }

    rows = [hip("A", 7.0 + dx, -dy, 0.9) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    rows += [hip("B", 3.0, 0.0), hip("B", -3.0, 0.0), hip("B", 0.0, 8.0, 0.1)]
    rows += [{"ct": "B", "view": "ap-pelvis", "side": "left", "kind": "hip", "confidence": None}]
    split = offsets_by_ct(rows, tolerance_mm=5.0, min_confidence=0.25)
    by_ct = {group["ct"]: group for group in split["groups"]}
    assert by_ct["A"]["mean_offset_mm"] == pytest.approx([7.0, 0.0]) and by_ct["A"]["found"] == 4
    assert by_ct["A"]["spread_mm"] == pytest.approx(1.0)
    assert by_ct["B"]["mean_offset_mm"] == pytest.approx([0.0, 0.0]) and by_ct["B"]["spread_mm"] == pytest.approx(3.0)
    assert split["found"] == 6 and split["within_tolerance"] == 2  # CT B's two
    assert split["within_tolerance_without_group_offsets"] == 6


def test_a_trained_refinement_moves_a_head_found_10_mm_off_onto_the_head(tmp_path):
    """Trained for a few epochs on synthetic hips (a bright disc of 25 mm radius, a neck bar to its left), the
    second stage is stored in the detector folder, loaded with it, and brings a first estimate 10 mm off a new
    hip's head back to within 2.5 mm of its centre."""
    import torch

    from bmdgan.detection.detector import write_detector
    from bmdgan.detection.network import HipHeatmapNet
    from bmdgan.detection.refinement import refine_head
    from bmdgan.detection.training import train_refiner

    torch.set_num_threads(1)
    spacing, rng = (0.5, 0.5), np.random.default_rng(0)

    def hip(head):
        rows, columns = np.mgrid[0:320, 0:320]
        image = rng.normal(0.0, 0.05, (320, 320)).astype(np.float32)
        image[(columns - head[0]) ** 2 + (rows - head[1]) ** 2 < 50**2] += 1.0
        image[(np.abs(rows - head[1]) < 22) & (columns < head[0]) & (columns > head[0] - 120)] += 0.6
        return image

    views = []
    for index in range(12):
        head = rng.uniform(130, 190, 2)
        view = LandmarkView(
            f"v{index}", "CT", "hip", spacing, {name: None for name in CHANNELS} | {"head_right": list(head)}
        )
        add_view(tmp_path / "views", view, hip(head))
        views.append(view)
    write_detector(tmp_path / "detector", HipHeatmapNet(), {"trained_on_cts": ["CT"]})
    train_refiner(tmp_path / "views", views, tmp_path / "detector", epochs=6, samples_per_hip=8, progress=False)
    detector = HipDetector.load(tmp_path / "detector")
    assert detector.refiner is not None
    for head in ((150.0, 170.0), (175.0, 140.0)):
        start = (head[0] + 14.0, head[1] - 14.0)  # 14 px = 7 mm each way: 9.9 mm off
        found = refine_head(detector.refiner, hip(head), spacing, start, "right")
        assert np.hypot(*np.subtract(found, head)) * 0.5 < 2.5  # a quarter of where it started


def test_held_out_cts_train_no_detector(tmp_path):
    """``train-detector --hold-out``: the held-out CT's views train nothing (the bundled sample's CT stays unseen);
    an id without views is refused before any training, and nothing is written."""
    import subprocess
    import sys

    for index, ct in enumerate(("CT_A", "CT_A", "CT_B")):
        landmarks = {name: None for name in CHANNELS} | {"head_right": [80.0 + index, 90.0]}
        add_view(
            tmp_path / "views", LandmarkView(f"{ct}-{index}", ct, "hip", (1.0, 1.0), landmarks), np.zeros((160, 160))
        )

    def train(*extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "bmdgan", "train-detector", str(tmp_path / "views"), "--epochs", "1"]
        return subprocess.run(command + ["--threads", "1", *extra], capture_output=True, text=True, timeout=300)

    refused = train("-o", str(tmp_path / "refused"), "--hold-out", "STS_012")
    assert refused.returncode == 2 and "holds no views of STS_012" in refused.stderr
    assert not (tmp_path / "refused").exists()
    trained = train("-o", str(tmp_path / "detector"), "--hold-out", "CT_B")
    assert trained.returncode == 0, trained.stderr
    description = json.loads((tmp_path / "detector" / "hip_detector.json").read_text())
    assert description["trained_on_cts"] == ["CT_A"] and description["training_views"] == 2


def test_cross_validation_trains_on_anatomy_views_and_measures_real_bones_only(tmp_path):
    """Views of a virtual anatomy sit under their source CT: they train the detectors of the folds that do not hold
    that CT, and the held-out figures are measured on the real bones' views alone."""
    import subprocess
    import sys

    for ct in ("CT_A", "CT_B"):
        for index, anatomy in enumerate((None, f"{ct}_right-a00", f"{ct}_right-a01")):
            landmarks = {name: None for name in CHANNELS} | {"head_right": [80.0 + index, 90.0]}
            landmarks["neck_right"] = [120.0 + index, 100.0]  # a labelled hip has both (landmark_views)
            view = LandmarkView(f"{ct}-{index}", ct, "hip", (1.0, 1.0), landmarks, anatomy)
            add_view(tmp_path / "views", view, np.zeros((160, 160)))
    assert {v.anatomy for v in read_views(tmp_path / "views")} >= {None, "CT_A_right-a00"}
    command = [sys.executable, "-m", "bmdgan", "train-detector", str(tmp_path / "views"), "-o", str(tmp_path / "cv")]
    command += ["--cross-validate", "--fold-count", "2", "--epochs", "1", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    folds = tmp_path / "cv" / "cross_validation"
    for fold, trained_on in ((0, "CT_B"), (1, "CT_A")):  # CTs dealt round-robin in sorted order
        description = json.loads((folds / f"fold_{fold}" / "hip_detector.json").read_text())
        assert description["trained_on_cts"] == [trained_on] and description["training_views"] == 3
        assert description["training_views_of_anatomies"] == 2
    measured = {row["id"] for row in json.loads((folds / "detections.json").read_text())}
    assert measured == {"CT_A-0", "CT_B-0"}


def _hip_views(folder, prefix: str, cts: tuple[str, ...], count: int) -> None:
    """``count`` blank 160 x 160 ``hip`` views per CT, a right hip labelled (1 mm pixels), ids ``<CT>-<prefix><n>``."""
    for ct in cts:
        for index in range(count):
            landmarks = {name: None for name in CHANNELS} | {"head_right": [80.0 + index, 90.0]}
            landmarks["neck_right"] = [120.0 + index, 100.0]
            add_view(
                folder, LandmarkView(f"{ct}-{prefix}{index}", ct, "hip", (1.0, 1.0), landmarks), np.zeros((160, 160))
            )


def test_a_recipe_is_measured_on_another_folders_views_of_the_same_cts(tmp_path):
    """``train-detector --cross-validate --measured-views OTHER --cross-validation-only``: the fold detectors train on
    VIEWS and are measured on OTHER's views of their held-out CTs (two recipes then meet the same images), and no
    detector is trained on every CT. A folder of other CTs, or the options without --cross-validate, are refused
    before any training."""
    import subprocess
    import sys

    _hip_views(tmp_path / "train", "t", ("CT_A", "CT_B"), 2)
    _hip_views(tmp_path / "measured", "m", ("CT_A", "CT_B"), 3)
    _hip_views(tmp_path / "others", "m", ("CT_A", "CT_C"), 1)
    base = [sys.executable, "-m", "bmdgan", "train-detector", str(tmp_path / "train"), "--epochs", "1"]
    base += ["--threads", "1", "--fold-count", "2"]
    command = base + ["-o", str(tmp_path / "cv"), "--cross-validate", "--cross-validation-only"]
    done = subprocess.run(command + ["--measured-views", str(tmp_path / "measured")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    folds = tmp_path / "cv" / "cross_validation"
    rows = json.loads((folds / "detections.json").read_text())
    assert sorted(row["id"] for row in rows if row["kind"] == "hip") == [
        f"{ct}-m{n}" for ct in ("CT_A", "CT_B") for n in range(3)
    ]
    assert json.loads((folds / "fold_0" / "hip_detector.json").read_text())["trained_on_cts"] == ["CT_B"]
    assert not (tmp_path / "cv" / "hip_detector.json").exists()  # no detector of every CT
    refused = subprocess.run(
        command + ["--measured-views", str(tmp_path / "others")], capture_output=True, text=True, cwd=tmp_path
    )
    assert refused.returncode == 2 and "holds views of other CTs than VIEWS" in refused.stderr
    alone = base + ["-o", str(tmp_path / "single"), "--measured-views", str(tmp_path / "measured")]
    refused = subprocess.run(alone, capture_output=True, text=True)
    assert refused.returncode == 2 and "belong to --cross-validate" in refused.stderr
    assert not (tmp_path / "single").exists()


def test_simulate_landmarks_renders_anatomy_views_under_their_source_ct(tmp_path):
    """``simulate-landmarks --anatomies``: each virtual anatomy of the bundled STS_012 crop gets its hip and thigh
    views, from its own deformed CT, filed under STS_012 and named by the anatomy. ``--ct-views``: a view of the
    real CT as scanned (none of an anatomy) at a 0.5-0.7 mm detector pitch, its labelled head on bright bone."""
    import subprocess
    import sys

    from bmdgan.cohort.anatomy import sample_anatomy
    from bmdgan.sample_data import sample_data_dir

    out = tmp_path / "views"
    command = [sys.executable, "-m", "bmdgan", "simulate-landmarks", str(sample_data_dir() / "STS_012.nii.gz")]
    command += ["-o", str(out), "--per-hip", "1", "--anatomies", "1", "--per-anatomy", "1", "--ct-views", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    bone = "STS_012_right"  # the prepared hip's key
    anatomy = sample_anatomy(0, bone, 0).anatomy_id
    views = {view.id: view for view in read_views(out)}
    assert set(views) == {
        f"{bone}-hip-000",
        f"{bone}-thigh-000",
        f"{anatomy}-hip-000",
        f"{anatomy}-thigh-000",
        "STS_012-ct-000",
    }
    assert {view.ct for view in views.values()} == {"STS_012"}
    assert views[f"{anatomy}-hip-000"].anatomy == anatomy and views[f"{bone}-hip-000"].anatomy is None
    assert (out / "prepared" / f"{anatomy}.anatomy.json").is_file()  # prepared from its own CT, not copied
    for view in views.values():  # a right hip: its head and neck labelled, inside the image
        image = read_image(out, view)
        column, row = view.landmarks["head_right"]
        assert 0 <= column < image.shape[1] and 0 <= row < image.shape[0] and view.landmarks["head_left"] is None
    assert "1 hip (anatomies) views" in done.stdout and "1 ct-as-scanned views" in done.stdout
    as_scanned = views["STS_012-ct-000"]
    assert as_scanned.view == "ct-as-scanned" and as_scanned.anatomy is None
    magnification = 1000.0 / (1000.0 - 200.0)  # SID over source-to-centre of the default AP view, +-15 %
    assert 0.5 / magnification / 1.15 < as_scanned.pixel_spacing_mm[0] < 0.7 / magnification * 1.15
    image = read_image(out, as_scanned)
    rows, columns = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    column, row = as_scanned.landmarks["head_right"]
    radius_px = 10.0 / as_scanned.pixel_spacing_mm[0]
    on_head = image[(columns - column) ** 2 + (rows - row) ** 2 < radius_px**2]
    assert on_head.mean() > np.percentile(image, 75)  # bone is bright: the label sits on the femoral head


def test_a_view_showing_another_cts_femur_trains_no_fold_that_holds_that_ct_out(tmp_path):
    """An AP pelvis of Pelvic-Ref-005's body with STS_020's femur (a transplant) is a view of both CTs: holding out
    either keeps it out of training; its donors survive the folder's round trip."""
    spacing, landmarks = (0.5, 0.5), {name: None for name in CHANNELS}
    real = LandmarkView("Pelvic-Ref-005-ap-000", "Pelvic-Ref-005", "ap-pelvis", spacing, landmarks)
    thigh = LandmarkView("STS_020_left-hip-000", "STS_020", "hip", spacing, landmarks)
    transplant = LandmarkView(
        "Pelvic-Ref-005-t00-ap-000",
        "Pelvic-Ref-005",
        "ap-pelvis",
        spacing,
        landmarks,
        "Pelvic-Ref-005-t00",
        ("STS_020",),
    )
    add_view(tmp_path, transplant, np.zeros((8, 8), np.float32))
    assert read_views(tmp_path) == [transplant] and transplant.source_cts == ("Pelvic-Ref-005", "STS_020")
    views = [real, thigh, transplant]
    assert views_without(views, {"STS_020"}) == [real]
    assert views_without(views, {"Pelvic-Ref-005"}) == [thigh]
    assert views_without(views, {"STS_012"}) == views


def test_an_ensemble_reads_an_image_with_its_members_mean_logits(tmp_path):
    """An ensemble of two differently initialised networks gives the mean of their logit maps and absent logits; an
    ensemble of one network twice finds exactly what that network finds alone; members trained on other CTs are
    refused and leave no detector behind; a member's threshold is its own."""
    import torch

    from bmdgan.detection.detector import write_detector, write_ensemble
    from bmdgan.detection.network import HipHeatmapNet
    from bmdgan.errors import InputError

    for seed in (0, 1):
        torch.manual_seed(seed)
        write_detector(tmp_path / f"m{seed}", HipHeatmapNet(), {"trained_on_cts": ["CT"], "seed": seed})
    set_found_confidence(tmp_path / "m0", 0.3)  # a member's own threshold does not carry over, nor block the join
    write_ensemble(tmp_path / "ensemble", [tmp_path / "m0", tmp_path / "m1"])
    ensemble = HipDetector.load(tmp_path / "ensemble")
    assert len(ensemble.networks) == 2 and "found_confidence" not in ensemble.description
    assert [member["seed"] for member in ensemble.description["members"]] == [0, 1]
    image = np.random.default_rng(0).normal(size=(150, 120)).astype(np.float32)
    singles = [HipDetector.load(tmp_path / f"m{seed}").heatmaps(image, (1.0, 1.0)) for seed in (0, 1)]
    logits, absent, matrix = ensemble.heatmaps(image, (1.0, 1.0))
    assert not np.allclose(singles[0][0], singles[1][0], atol=1e-3)  # the members differ
    np.testing.assert_allclose(logits, (singles[0][0] + singles[1][0]) / 2, atol=1e-5)
    np.testing.assert_allclose(absent, (singles[0][1] + singles[1][1]) / 2, atol=1e-5)
    np.testing.assert_array_equal(matrix, singles[0][2])

    write_ensemble(tmp_path / "twice", [tmp_path / "m1", tmp_path / "m1"])
    rows, columns = np.mgrid[0:200, 0:200]
    disc = ((rows - 100.0) ** 2 + (columns - 90.0) ** 2 < 25**2).astype(np.float32)
    alone = HipDetector.load(tmp_path / "m1")
    alone_logits = alone.heatmaps(disc, (1.0, 1.0))[0]
    np.testing.assert_allclose(
        HipDetector.load(tmp_path / "twice").heatmaps(disc, (1.0, 1.0))[0], alone_logits, atol=1e-5
    )

    write_detector(tmp_path / "other", HipHeatmapNet(), {"trained_on_cts": ["OTHER"], "seed": 2})
    with pytest.raises(InputError, match="trained on different CTs"):
        write_ensemble(tmp_path / "mixed", [tmp_path / "m0", tmp_path / "other"])
    assert not (tmp_path / "mixed").exists()


def test_train_detector_members_trains_each_seed_and_measures_them_beside_the_ensemble(tmp_path):
    """``train-detector --members 2 --cross-validate --folds 1``: the one fold asked for and the final detector are
    ensembles of seeds 5 and 6, each member trained in its own folder; the cross-validation reports each member
    alone over the same held-out hips as the ensemble, with the threshold sweep; asking the finished folder for
    another member count is refused. ``--found-confidence`` then sets the finished fold's and final detector's
    threshold (weights kept) and the summary is counted at it; a threshold that is no probability is refused."""
    import subprocess
    import sys

    _hip_views(tmp_path / "views", "", ("CT_A", "CT_B"), 2)

    def train(*extra: str) -> subprocess.CompletedProcess:
        command = [
            sys.executable,
            "-m",
            "bmdgan",
            "train-detector",
            str(tmp_path / "views"),
            "-o",
            str(tmp_path / "cv"),
        ]
        command += ["--epochs", "1", "--threads", "1", "--seed", "5", *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    done = train("--members", "2", "--cross-validate", "--fold-count", "2", "--folds", "1")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "cv" / "cross_validation" / "fold_0").exists()
    for folder in (tmp_path / "cv", tmp_path / "cv" / "cross_validation" / "fold_1"):
        description = json.loads((folder / "hip_detector.json").read_text())
        assert [member["seed"] for member in description["members"]] == [5, 6]
        assert all((folder / "members" / f"seed_{seed}" / "hip_detector.json").is_file() for seed in (5, 6))
    summary = json.loads((tmp_path / "cv" / "cross_validation" / "summary.json").read_text())
    assert [member["seed"] for member in summary["members"]] == [5, 6] and summary["measured_folds"] == [1]
    assert all(member["all"]["hips"] == summary["all"]["hips"] == 2 for member in summary["members"])  # CT_B's
    assert "member seed 6 alone" in done.stdout
    assert [point["min_confidence"] for point in summary["threshold_sweep"]][:2] == [0.05, 0.1]
    detections = json.loads((tmp_path / "cv" / "cross_validation" / "detections.json").read_text())
    for row in (row for row in detections if row.get("head_error_mm") is not None):
        assert np.hypot(*row["head_offset_mm"]) == pytest.approx(row["head_error_mm"])
    assert summary["offsets_by_ct"]["found"] == summary["all"]["found"]
    assert "confidence 0.05:" in done.stdout
    kept = (tmp_path / "cv" / "hip_detector_member0.safetensors").read_bytes()
    thresholded = train(
        "--members", "2", "--found-confidence", "0.3", "--cross-validate", "--fold-count", "2", "--folds", "1"
    )
    assert thresholded.returncode == 0, thresholded.stderr  # finished detectors (fold 1, final): weights kept
    fold_1 = tmp_path / "cv" / "cross_validation" / "fold_1"
    assert HipDetector.load(tmp_path / "cv").found_confidence == HipDetector.load(fold_1).found_confidence == 0.3
    assert (tmp_path / "cv" / "hip_detector_member0.safetensors").read_bytes() == kept
    summary = json.loads((tmp_path / "cv" / "cross_validation" / "summary.json").read_text())
    assert summary["min_confidence"] == 0.3 and "at confidence 0.3:" in thresholded.stdout
    assert train("--members", "2", "--found-confidence", "1").returncode == 2  # no probability: refused at once
    refused = train("--members", "3")
    assert refused.returncode == 2 and "holds a detector of 2 member(s), not 3" in refused.stderr


@pytest.mark.slow
def test_an_implanted_hip_labels_the_detectors_views_but_no_cohort(shared_data, tmp_path):
    """The TotalSegmentator example CT has screws in its left femoral neck. Prepared as for a cohort, its left hip
    is refused for the metal; with ``allow_metal`` (simulate-landmarks --allow-metal) it is prepared with the metal's
    volume on record (the 12.8 cm3 the refusal names), listed only for the detector's views, and the CT gets AP
    pelvis views with both heads labelled: the left head on the image's right, level with the right one."""
    ct = shared_data / "ct" / "totalsegmentator_example" / "example_ct.nii.gz"
    prepared = tmp_path / "prepared"
    ids, skipped = prepare_cts([ct], prepared, progress=False)
    assert ids == ["example_ct"] and prepared_bones(prepared, "example_ct") == ["example_ct_right"]
    assert "metal" in skipped["example_ct:left"] and "12.80 cm3" in skipped["example_ct:left"]
    sides_record = json.loads((prepared / "example_ct.sides.json").read_text())
    assert sides_record["implanted"] == ["left"]  # what allow_metal tries again, and nothing else
    ids, skipped = prepare_cts([ct], prepared, progress=False, allow_metal=True)
    assert prepared_bones(prepared, "example_ct", with_metal=True) == ["example_ct_left", "example_ct_right"]
    assert prepared_bones(prepared, "example_ct") == ["example_ct_right"]  # a cohort still sees one hip
    assert real_bones(prepared) == {"example_ct": ["example_ct_right"]}
    assert load_prepared(prepared, "example_ct_left").metal_in_pf_cm3 == pytest.approx(12.80, abs=0.01)
    assert "detector's views only" in skipped["example_ct:left"]
    assert json.loads((prepared / "example_ct.sides.json").read_text())["implanted"] == ["left"]
    counts = simulate_landmark_views(
        str(prepared), ids, str(tmp_path / "views"), per_hip=0, ap_per_ct=1, seed=0, progress=False, with_metal=True
    )
    assert counts == {"ap-pelvis": 1}
    (view,) = read_views(tmp_path / "views")
    right, left = np.array(view.landmarks["head_right"]), np.array(view.landmarks["head_left"])
    distance_mm = np.hypot(*((left - right) * view.pixel_spacing_mm[::-1]))
    assert left[0] > right[0] and 150.0 < distance_mm < 220.0  # heads 150-220 mm apart (bmdgan.ct.hips)
    assert abs(left[1] - right[1]) * view.pixel_spacing_mm[0] < 15.0
    # a run that has no view to render says why instead of leaving a folder that no command can read
    with pytest.raises(InputError, match="no view to render"):
        simulate_landmark_views(
            str(prepared), ids, str(tmp_path / "none"), per_hip=0, ap_per_ct=0, seed=0, progress=False, with_metal=True
        )
    assert not (tmp_path / "none" / "views.jsonl").exists()
