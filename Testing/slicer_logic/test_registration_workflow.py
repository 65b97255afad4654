"""BMDGANRegistration Logic: registration in a separate process, the pose in a transform node, nudges and the overlay,
on slicer-core with a radiograph simulated from the bundled CT (Resources/SampleData/STS_012.nii.gz)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import vtk

slicer = pytest.importorskip("slicer")

from bmdgan.errors import BMDGANError, InputError  # noqa: E402
from bmdgan.io import LPS_TO_RAS  # noqa: E402
from bmdgan.sample_data import SAMPLE_CT, sample_data_dir  # noqa: E402
from BMDGANLib.estimation_logic import EstimationLogic, study_radiographs  # noqa: E402
from BMDGANLib.mrml_conversion import vtk_matrix  # noqa: E402
from BMDGANRegistrationLib import registration_logic as registration  # noqa: E402
from BMDGANRegistrationLib.curation_logic import CurationLogic  # noqa: E402


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """(scene, CT node, CT, radiograph node, true geometry): an AP radiograph simulated from the sample CT at 1 mm."""
    from bmdgan.projection.dicom_writer import write_dx_dicom
    from bmdgan.projection.geometry import default_ap_geometry
    from bmdgan.projection.simulator import simulate_radiograph

    scene = slicer.vtkMRMLScene()
    ct_node, ct = CurationLogic().load_ct(sample_data_dir() / SAMPLE_CT, scene)
    truth = default_ap_geometry(ct, pixel_spacing_mm=1.0)
    dicom = write_dx_dicom(
        tmp_path_factory.mktemp("xray") / "xray.dcm", simulate_radiograph(ct, truth, rng=3), patient_id="x"
    )
    radiograph_node, _ = EstimationLogic().load_radiograph(dicom, scene)
    return scene, ct_node, ct, radiograph_node, truth


def bone_centroid_lps(ct) -> np.ndarray:
    k, j, i = np.nonzero(ct.array > registration.BONE_THRESHOLD_HU)
    return (np.c_[i, j, k, np.ones(len(i))] @ ct.geometry.ijk_to_lps().T)[:, :3].mean(axis=0)


def overlay_mask(overlay_node, value: int) -> np.ndarray:
    return np.array(slicer.util.arrayFromVolume(overlay_node)[0] == value, dtype=float)


def mask_shift_px(before: np.ndarray, after: np.ndarray, reach_px: int = 20) -> np.ndarray:
    """(columns, rows) shift that best lays ``before`` onto ``after``: the integer shift with the largest overlap,
    refined to a fraction of a pixel by the parabola through its neighbours along each axis. (Centroids would not do:
    outline pixels leave the detector at its edge.)"""

    def overlap(dx: int, dy: int) -> float:
        shifted = np.zeros_like(before)
        rows, columns = before.shape
        shifted[max(dy, 0) : rows + min(dy, 0), max(dx, 0) : columns + min(dx, 0)] = before[
            max(-dy, 0) : rows - max(dy, 0), max(-dx, 0) : columns - max(dx, 0)
        ]
        return float((shifted * after).sum())

    reach = range(-reach_px, reach_px + 1)
    scores = {(dx, dy): overlap(dx, dy) for dx in reach for dy in reach}
    dx, dy = max(scores, key=scores.get)

    def vertex(left: float, middle: float, right: float) -> float:
        return 0.5 * (left - right) / (left - 2.0 * middle + right)

    return np.array(
        [
            dx + vertex(overlap(dx - 1, dy), scores[dx, dy], overlap(dx + 1, dy)),
            dy + vertex(overlap(dx, dy - 1), scores[dx, dy], overlap(dx, dy + 1)),
        ]
    )


def test_the_nominal_geometry_comes_from_the_dicom_detector(simulated):
    _, _, ct, radiograph_node, truth = simulated
    nominal = registration.radiograph_geometry(radiograph_node, ct)
    assert nominal.source_to_detector_mm == truth.source_to_detector_mm == 1000.0
    assert (nominal.column_spacing_mm, nominal.row_spacing_mm) == (1.0, 1.0)  # ImagerPixelSpacing, not PixelSpacing
    assert radiograph_node.GetSpacing()[:2] == pytest.approx((0.8, 0.8))  # at the patient plane (1 mm / 1.25)
    np.testing.assert_allclose(nominal.camera_from_lps, truth.camera_from_lps, atol=1e-9)  # AP on the CT centre


def test_a_nudge_in_the_transform_node_moves_the_overlay_by_the_projected_pixels(simulated):
    scene, ct_node, ct, radiograph_node, truth = simulated
    transform = registration.pose_transform_node(truth, truth, scene, "pose")  # registered = true pose
    overlay = registration.update_overlay(radiograph_node, ct_node, transform, scene)
    assert slicer.util.arrayFromVolume(overlay).shape == (1,) + truth.shape  # 226 x 252 px: rendered unbinned
    before = {value: overlay_mask(overlay, value) for value in (registration.OVERLAY_EDGE, registration.OVERLAY_BONE)}
    assert before[registration.OVERLAY_EDGE].sum() > 500 and before[registration.OVERLAY_BONE].sum() > 500
    magnification = truth.magnification_at(bone_centroid_lps(ct))  # detector mm per mm at the bone
    # As in the Transforms module: +10 mm along LPS x (patient left) is -10 mm along RAS x.
    edit = np.eye(4)
    edit[0, 3] = -10.0
    transform.SetMatrixTransformToParent(vtk_matrix(edit))
    registration.update_overlay(radiograph_node, ct_node, transform, scene, overlay_node=overlay)
    expected_px = 10.0 * magnification / truth.column_spacing_mm  # the AP camera's +x is LPS +x: columns grow
    assert expected_px == pytest.approx(12.08, abs=0.01)
    for value, mask in before.items():  # DRR edges and bone outline alike
        np.testing.assert_allclose(mask_shift_px(mask, overlay_mask(overlay, value)), [expected_px, 0.0], atol=0.25)
    # The nudge buttons' move: 5 mm down the image (camera +y), at the CT point of the bone centroid.
    registration.nudge(transform, bone_centroid_lps(ct), translation_mm=(0.0, 5.0, 0.0))
    registration.update_overlay(radiograph_node, ct_node, transform, scene, overlay_node=overlay)
    for value, mask in before.items():
        np.testing.assert_allclose(
            mask_shift_px(mask, overlay_mask(overlay, value)),
            [expected_px, 5.0 * magnification / truth.row_spacing_mm],
            atol=0.25,
        )
    motion = registration.pose_geometry(transform).camera_from_lps @ np.linalg.inv(truth.camera_from_lps)
    np.testing.assert_allclose(motion[:3, 3], [10.0, 5.0, 0.0], atol=1e-9)  # camera mm: 10 right, 5 down
    # The overlay lies on the radiograph: same IJK-to-RAS, and it is no radiograph for the batch.
    overlay_matrix, radiograph_matrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    overlay.GetIJKToRASMatrix(overlay_matrix)
    radiograph_node.GetIJKToRASMatrix(radiograph_matrix)
    assert all(
        overlay_matrix.GetElement(r, c) == radiograph_matrix.GetElement(r, c) for r in range(4) for c in range(4)
    )
    assert overlay not in study_radiographs(scene)


def test_an_in_plane_rotation_nudge_turns_the_image_about_the_centre(simulated):
    from bmdgan.projection.geometry import volume_centre_lps

    scene, ct_node, ct, _, truth = simulated
    np.testing.assert_allclose(
        registration.ct_centre_lps(ct_node), volume_centre_lps(ct.shape_ijk, ct.geometry.ijk_to_lps()), atol=1e-6
    )
    transform = registration.pose_transform_node(truth, truth, scene, "pose")
    centre = bone_centroid_lps(ct)
    side_point = centre + np.array([50.0, 0.0, 0.0])  # 50 mm to the patient's left: image right of the centre
    registration.nudge(transform, centre, rotation_deg=3.0)
    moved = registration.pose_geometry(transform)
    np.testing.assert_allclose(moved.project_points(centre), truth.project_points(centre), atol=1e-9)
    before = truth.project_points(side_point) - truth.project_points(centre)
    after = moved.project_points(side_point) - moved.project_points(centre)
    angle = np.degrees(np.arctan2(after[1], after[0]) - np.arctan2(before[1], before[0]))
    assert angle == pytest.approx(3.0, abs=1e-6)  # +3 degrees: clockwise on the image (rows grow downwards)
    assert np.linalg.norm(after) == pytest.approx(np.linalg.norm(before), rel=1e-9)
    scaled = np.diag([1.1, 1.0, 1.0, 1.0])
    transform.SetMatrixTransformToParent(vtk_matrix(scaled))
    with pytest.raises(InputError, match="not a proper rotation"):
        registration.pose_geometry(transform)
    plain = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "not a registration")
    with pytest.raises(InputError, match="holds no registration pose"):
        registration.pose_geometry(plain)


def test_the_overlay_is_shown_over_the_radiograph_at_the_requested_opacity(simulated):
    scene, ct_node, _, radiograph_node, truth = simulated
    transform = registration.pose_transform_node(truth, truth, scene, "pose")
    overlay = registration.update_overlay(radiograph_node, ct_node, transform, scene)
    views = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in ("Red", "Yellow", "Green")]
    assert registration.show_overlay(scene, radiograph_node, overlay, 0.35) == 3
    for view in views:
        assert view.GetBackgroundVolumeID() == radiograph_node.GetID()
        assert view.GetForegroundVolumeID() == overlay.GetID()
        assert view.GetForegroundOpacity() == pytest.approx(0.35)
    with pytest.raises(InputError, match="outside 0-1"):
        registration.show_overlay(scene, radiograph_node, overlay, 1.5)
    assert views[0].GetForegroundOpacity() == pytest.approx(0.35)
    display = overlay.GetDisplayNode()
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == 0.5  # 0 (no edge) is transparent
    colours = display.GetColorNode()
    assert colours.GetNumberOfColors() == 3
    rgba = [0.0] * 4
    colours.GetColor(registration.OVERLAY_EDGE, rgba)
    assert rgba == pytest.approx([0.16, 0.9, 0.16, 1.0], abs=1 / 255)  # green, stored in 8 bits
    colours.GetColor(0, rgba)
    assert rgba[3] == 0.0


def test_landmark_pairs_from_markups_on_the_radiograph_and_in_the_ct(simulated):
    scene, _, ct, radiograph_node, truth = simulated
    points, pixels = landmark_markups(scene, ct, radiograph_node, truth)
    landmarks = registration.landmarks_from_markups(radiograph_node, *points)
    np.testing.assert_allclose(landmarks.pixels, pixels, atol=1e-9)
    np.testing.assert_allclose(truth.project_points(landmarks.lps_mm), pixels, atol=1e-9)
    points[1].SetNthControlPointLabel(0, "elsewhere")
    points[1].SetNthControlPointLabel(1, "nowhere")
    points[1].SetNthControlPointLabel(2, "somewhere")
    with pytest.raises(InputError, match="3 landmark pairs .* unpaired: elsewhere, nowhere, p0, p1, p2, somewhere"):
        registration.landmarks_from_markups(radiograph_node, *points)
    points[1].SetNthControlPointLabel(0, "p0")
    points[1].SetNthControlPointLabel(1, "p1")
    points[1].SetNthControlPointLabel(2, "p2")
    position = np.array(points[0].GetNthControlPointPosition(0))
    points[0].SetNthControlPointPosition(0, *(position + [0.0, 0.0, 5.0]))
    with pytest.raises(InputError, match="p0 do not lie on the radiograph"):
        registration.landmarks_from_markups(radiograph_node, *points)


def landmark_markups(scene, ct, radiograph_node, geometry):
    """Six named CT points around the bone (a CT markups node) and their projections placed on the radiograph
    (a second markups node), as a user would click them; returns the nodes and the pixels (column, row)."""
    centre = bone_centroid_lps(ct)
    offsets = np.array([[0, 0, 0], [40, 0, 10], [-30, 10, -20], [10, -25, 30], [-20, 15, 40], [25, 20, -35]], float)
    lps = centre + offsets
    pixels = geometry.project_points(lps)
    ijk_to_ras = vtk.vtkMatrix4x4()
    radiograph_node.GetIJKToRASMatrix(ijk_to_ras)
    on_image = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "radiograph points")
    in_ct = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "CT points")
    for number, (pixel, point) in enumerate(zip(pixels, lps)):
        ras = ijk_to_ras.MultiplyPoint((pixel[0], pixel[1], 0.0, 1.0))[:3]
        on_image.AddControlPoint(vtk.vtkVector3d(*ras), f"p{number}")
        in_ct.AddControlPoint(vtk.vtkVector3d(*(LPS_TO_RAS[:3, :3] @ point)), f"p{number}")
    return [on_image, in_ct], pixels


@pytest.mark.slow
def test_registration_runs_in_a_process_from_landmarks_and_writes_the_pose(simulated, tmp_path):
    """The nominal start is 15 mm and 6 degrees off; landmark pairs clicked with 1.5 mm errors give the start pose,
    the registration process refines it, and the transform node then holds the true pose (in-plane within 1.5 mm).
    A cancelled job stops."""
    from bmdgan.projection.pose import camera_pose

    scene, ct_node, ct, radiograph_node, truth = simulated
    centre = bone_centroid_lps(ct)
    nominal = truth.with_pose(
        camera_pose(np.array([0.0, 0.0, 6.0, 15.0, -10.0, 0.0]), truth.camera_from_lps, centre).double().numpy()
    )
    points, _ = landmark_markups(scene, ct, radiograph_node, truth)
    clicking_error_mm = np.random.default_rng(0).normal(0.0, 1.5, (6, 2))  # RAS mm on the radiograph (0.8 mm px)
    for index, error in enumerate(clicking_error_mm):
        position = np.array(points[0].GetNthControlPointPosition(index))
        points[0].SetNthControlPointPosition(index, *(position + [error[0], error[1], 0.0]))
    landmarks = registration.landmarks_from_markups(radiograph_node, *points)
    logic = registration.RegistrationLogic()
    job = logic.start(radiograph_node, ct_node, scene, tmp_path / "job", nominal, landmarks=landmarks)
    statuses = []
    deadline = time.time() + 300
    while job.running() and time.time() < deadline:  # what the widget's timer does: the GUI stays free
        statuses.append(job.status())
        time.sleep(0.5)
    assert not job.running()
    record, transform = logic.finish(job, scene)
    assert record["quality"]["flag"] == "good" and record["start"] == "landmarks"
    assert any(status.startswith("level ") for status in statuses)  # e.g. "level 1: pitch 4 mm, ... 2.1 s"
    assert transform.GetAttribute(registration.QUALITY_ATTRIBUTE) == "good"
    registered = registration.pose_geometry(transform)
    np.testing.assert_allclose(registration.reference_geometry(transform).camera_from_lps, nominal.camera_from_lps)
    bone = centre + np.array([[0, 0, 0], [30, 0, 0], [0, 0, 40], [0, 0, -40]], float)
    error_px = np.linalg.norm(registered.project_points(bone) - truth.project_points(bone), axis=1)
    assert error_px.max() < 1.5 * truth.magnification_at(centre)  # 1.5 mm at the bone, in 1 mm detector pixels
    overlay = registration.update_overlay(radiograph_node, ct_node, transform, scene)
    assert (slicer.util.arrayFromVolume(overlay) == registration.OVERLAY_EDGE).sum() > 500
    stopped = logic.start(radiograph_node, ct_node, scene, tmp_path / "stopped", nominal)
    assert logic.cancel(stopped) != 0
    with pytest.raises(BMDGANError, match="stopped with exit code"):
        logic.finish(stopped, scene)
