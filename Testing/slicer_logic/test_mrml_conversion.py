"""Engine data <-> MRML nodes on real MRML (slicer-core wheel, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from bmdgan.io import Volume, VolumeGeometry, read_ct, read_label_volume, read_radiograph  # noqa: E402
from BMDGANLib import mrml_conversion as conversion  # noqa: E402
from dicom_factory import hip_like_phantom, write_dx  # noqa: E402


@pytest.fixture()
def scene():
    return slicer.vtkMRMLScene()


def test_real_ct_round_trip_keeps_voxels_and_ijk_to_ras(scene, shared_data):
    volume = read_ct(shared_data / "ct" / "totalsegmentator_example" / "example_ct.nii.gz")
    node = conversion.volume_to_node(volume, scene, "CT")
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    # The file's LPS direction is diag(-1,-1,1): in RAS the i and j axes run along +R and +A.
    np.testing.assert_allclose(ijk_to_ras[:3, :3], np.diag([3.0, 3.0, 3.0]), atol=1e-6)
    np.testing.assert_allclose(ijk_to_ras[:3, 3], [-178.0, 11.3, 94.3], atol=0.05)
    back = conversion.node_to_volume(node)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.geometry.ijk_to_lps(), volume.geometry.ijk_to_lps(), atol=1e-9)


def test_oblique_geometry_round_trip(scene):
    angle = np.deg2rad(15)
    direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    array = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    volume = Volume(array, VolumeGeometry((0.5, 0.6, 2.0), (1.0, 2.0, 3.0), direction))
    back = conversion.node_to_volume(conversion.volume_to_node(volume, scene, "oblique"))
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.geometry.direction, direction, atol=1e-9)
    np.testing.assert_allclose(back.geometry.spacing_mm, (0.5, 0.6, 2.0))


def test_totalsegmentator_masks_to_segmentation_and_back(scene, shared_data):
    folder = shared_data / "ct" / "totalsegmentator_example"
    ct = read_ct(folder / "example_ct.nii.gz")
    labels = np.zeros(ct.array.shape, np.int16)
    for value, name in ((1, "hip_right"), (2, "femur_right")):
        labels[read_label_volume(folder / "masks_totalsegmentator_v1" / f"{name}.nii.gz", like=ct).array > 0] = value
    names = {1: "pelvis", 2: "femur", 3: "proximal femur"}
    node = conversion.labels_to_segmentation_node(ct.with_array(labels, "label"), scene, names)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 2  # the empty PF label is skipped
    assert segmentation.GetSegmentIdBySegmentName("femur")
    back = conversion.segmentation_node_to_labels(node, ct, scene, names)
    np.testing.assert_array_equal(back.array, labels)
    assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0  # temporary nodes removed


def test_markups_round_trip_converts_lps_and_ras(scene):
    points = {"femoral head centre": np.array([10.0, -20.0, 30.0]), "neck centre": np.array([1.5, 2.5, -3.5])}
    node = conversion.points_to_markups_node(points, scene, "Landmarks")
    assert node.GetNthControlPointLabel(0) == "femoral head centre"
    np.testing.assert_allclose(node.GetNthControlPointPosition(0), [-10.0, 20.0, 30.0])  # stored in RAS
    back = conversion.markups_node_to_points(node)
    assert list(back) == list(points)
    for name in points:
        np.testing.assert_allclose(back[name], points[name])
    node.AddControlPoint(vtk.vtkVector3d(0, 0, 0), "neck centre")
    with pytest.raises(Exception, match="two points named 'neck centre'"):
        conversion.markups_node_to_points(node)


def test_transform_round_trip_and_action_on_points(scene):
    angle = np.deg2rad(30)
    matrix_lps = np.eye(4)
    matrix_lps[:3, :3] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    matrix_lps[:3, 3] = [5.0, -7.0, 11.0]
    node = conversion.matrix_to_transform_node(matrix_lps, scene, "Pose")
    np.testing.assert_allclose(conversion.transform_node_to_matrix(node), matrix_lps, atol=1e-12)
    # The node moves an RAS point as the LPS matrix moves the same physical point.
    point_lps = np.array([1.0, 2.0, 3.0])
    moved_ras = np.array(node.GetTransformToParent().TransformPoint(*(point_lps * [-1, -1, 1])))
    np.testing.assert_allclose(moved_ras * [-1, -1, 1], (matrix_lps @ [*point_lps, 1])[:3], atol=1e-9)


def test_radiograph_to_node_and_back(scene, shared_data):
    radiograph = read_radiograph(shared_data / "xray" / "ddh_pediatric" / "331_DDH_1.dcm")
    node = conversion.radiograph_to_node(radiograph, scene, "X-ray")
    assert node.GetSpacing() == (1.0, 1.0, 1.0)
    back = conversion.node_to_radiograph(node)
    np.testing.assert_array_equal(back.pixels, radiograph.pixels)
    assert back.pixel_spacing_mm == (1.0, 1.0)
    assert (back.modality, back.spacing_source, back.warnings) == ("DX", "PixelSpacing", radiograph.warnings)


def test_a_node_keeps_its_file_header_until_its_spacing_is_set_in_slicer(scene, tmp_path):
    """A DX with its spacing at the detector only, a child's age and laterality, read into a node: the estimate from
    the node sees what `bmdgan estimate` sees in the file (the age, the side, the spacing warning). Once the user sets
    the node's spacing, that is the spacing, and the warning about the file's goes; the age stays."""
    attenuation, _ = hip_like_phantom()
    write_dx(
        tmp_path / "child.dcm",
        np.rint(1000 * attenuation),
        PatientAge="008Y",
        ImageLaterality="R",
        ImagerPixelSpacing=[0.2, 0.2],
    )
    radiograph = read_radiograph(tmp_path / "child.dcm")
    node = conversion.radiograph_to_node(radiograph, scene, "child")
    back = conversion.node_to_radiograph(node)
    assert (back.patient_age_years, back.laterality, back.body_part) == (8.0, "R", None)
    assert back.spacing_source == "ImagerPixelSpacing (at the detector)" and back.imager_pixel_spacing_mm == (0.2, 0.2)
    assert back.pixel_spacing_mm == pytest.approx((0.2, 0.2)) and back.warnings == radiograph.warnings
    assert any("detector only" in warning for warning in back.warnings)
    node.SetSpacing(0.17, 0.17, 1.0)  # the user states the spacing at the patient (0.2 mm / 1.18)
    stated = conversion.node_to_radiograph(node)
    assert (
        stated.pixel_spacing_mm == pytest.approx((0.17, 0.17)) and stated.spacing_source == "MRML volume node spacing"
    )
    assert not any("detector only" in warning for warning in stated.warnings)
    assert stated.patient_age_years == 8.0
