"""Reading CTs and radiographs: real geometry of the shared data, DICOM attributes, and bad input."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from bmdgan.errors import InputError
from bmdgan.io import Volume, VolumeGeometry, read_ct, read_label_volume, read_radiograph, write_volume
from dicom_factory import hip_like_phantom, write_dx  # noqa: E402

# Grid sizes (i, j, k) of the shared CTs as listed in ../shared/data/README.md and their headers.
IBSI_SIZES = {
    "STS_001": (198, 202, 59),
    "STS_003": (154, 158, 51),
    "STS_007": (249, 215, 70),
    "STS_012": (159, 155, 53),
    "STS_015": (158, 165, 57),
    "STS_020": (241, 304, 97),
    "STS_021": (219, 216, 83),
    "STS_029": (191, 174, 62),
    "STS_031": (189, 210, 67),
    "STS_036": (192, 192, 68),
    "STS_040": (194, 204, 66),
    "STS_046": (212, 210, 84),
    "STS_048": (195, 185, 57),
}


@pytest.mark.parametrize("case", sorted(IBSI_SIZES))
def test_ibsi_ct_geometry_and_hu(shared_data, case):
    volume = read_ct(shared_data / "ct" / "ibsi_sts" / f"{case}.nii.gz")
    assert volume.shape_ijk == IBSI_SIZES[case]
    np.testing.assert_allclose(volume.geometry.spacing_mm, (0.977, 0.977, 3.27), atol=1e-3)
    assert volume.unit == "HU" and volume.array.dtype == np.float32
    assert volume.array.min() == pytest.approx(-1000, abs=1)  # air outside the leg
    assert 1200 < volume.array.max() < 3100  # cortical bone (STS_020 has metal-bright spots up to 3071)
    # A leg CT is mostly soft tissue and fat: the median voxel lies between fat and muscle.
    assert -200 < float(np.median(volume.array)) < 100


def test_totalsegmentator_ct_and_masks(shared_data):
    folder = shared_data / "ct" / "totalsegmentator_example"
    volume = read_ct(folder / "example_ct.nii.gz")
    assert volume.shape_ijk == (122, 101, 112)
    np.testing.assert_allclose(volume.geometry.spacing_mm, (3.0, 3.0, 3.0))
    assert volume.array.max() == pytest.approx(3382)  # the screws in the left femoral neck
    # This file's header is LPS-correct: direction diag(-1, -1, 1) i.e. voxel i runs to the patient's right.
    np.testing.assert_allclose(volume.geometry.direction, np.diag([-1.0, -1.0, 1.0]))
    femur_right = read_label_volume(folder / "masks_totalsegmentator_v1" / "femur_right.nii.gz", like=volume)
    assert set(np.unique(femur_right.array)) == {0, 1}
    # The right femur is on the patient's right: smaller LPS x than the left femur.
    femur_left = read_label_volume(folder / "masks_totalsegmentator_v1" / "femur_left.nii.gz", like=volume)

    def centre_x(labels):
        k, j, i = np.nonzero(labels.array)
        return (labels.geometry.ijk_to_lps() @ np.array([i.mean(), j.mean(), k.mean(), 1.0]))[0]

    assert centre_x(femur_right) < centre_x(femur_left) - 100


def test_visible_human_pelvis(shared_data):
    volume = read_ct(shared_data / "ct" / "visible_human_pelvis" / "vhm_pelvis.nii.gz")
    assert volume.shape_ijk == (512, 512, 140)
    np.testing.assert_allclose(volume.geometry.spacing_mm, (1.0, 1.0, 1.0))
    assert volume.array.min() == pytest.approx(-1024) and volume.array.max() > 1000


def test_label_volume_on_another_grid_is_refused(shared_data, tmp_path):
    volume = read_ct(shared_data / "ct" / "ibsi_sts" / "STS_012.nii.gz")
    mask = shared_data / "ct" / "totalsegmentator_example" / "masks_totalsegmentator_v1" / "femur_left.nii.gz"
    with pytest.raises(InputError, match="not on the CT's voxel grid"):
        read_label_volume(mask, like=volume)


def test_paediatric_radiographs(shared_data):
    files = sorted((shared_data / "xray" / "ddh_pediatric").glob("*.dcm"))
    assert len(files) == 10
    for path in files:
        radiograph = read_radiograph(path)
        assert radiograph.shape == (331, 331)
        assert radiograph.pixel_spacing_mm == (1.0, 1.0) and radiograph.spacing_source == "PixelSpacing"
        assert radiograph.modality == "DX"
        assert 0 <= radiograph.pixels.min() < radiograph.pixels.max() <= 255
        # Bone is bright: at the femoral-head landmarks shipped with each image (x, y in pixels)
        # the image is brighter than its median (soft tissue and background).
        landmarks = json.loads(path.with_suffix(".json").read_text())["landmark_list"][0]
        for name in ("fem_l", "fem_r"):
            x, y = landmarks[name]
            assert radiograph.pixels[y - 3 : y + 4, x - 3 : x + 4].mean() > np.median(radiograph.pixels)


def test_ct_write_read_round_trip(tmp_path):
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) - 1000
    direction = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], dtype=float)
    volume = Volume(array, VolumeGeometry((0.5, 0.7, 2.0), (10.0, -20.0, 30.0), direction))
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        path = write_volume(volume, tmp_path / f"ct{suffix}")
        back = read_ct(path)
        np.testing.assert_array_equal(back.array, array)
        np.testing.assert_allclose(back.geometry.ijk_to_lps(), volume.geometry.ijk_to_lps(), atol=1e-5)
    assert not list(tmp_path.glob(".partial-*"))


def test_empty_volume_is_refused():
    with pytest.raises(InputError, match="empty"):
        Volume(np.zeros((51, 158, 0), np.float32), VolumeGeometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))


def test_ijk_to_lps_maps_voxel_centres():
    geometry = VolumeGeometry((2.0, 3.0, 4.0), (1.0, 2.0, 3.0), np.diag([-1.0, 1.0, 1.0]))
    np.testing.assert_allclose(geometry.ijk_to_lps() @ [1, 1, 1, 1], [1 - 2, 2 + 3, 3 + 4, 1])
    np.testing.assert_allclose(geometry.ijk_to_ras() @ [0, 0, 0, 1], [-1, -2, 3, 1])


def test_dicom_series_folder(tmp_path):
    array = (np.random.default_rng(0).normal(0, 50, (5, 16, 16))).astype(np.int16)  # soft tissue (HU)
    array[:, :4] -= 1000  # with air in front of the body, as in every CT
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, 2.5))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = generate_series_uid()
    for k in range(array.shape[0]):
        slice_image = image[:, :, k]
        for tag, value in (
            ("0008|0060", "CT"),
            ("0020|000e", series),
            ("0020|0032", f"0\\0\\{2.5 * k}"),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0028|0030", "0.8\\0.8"),
            ("0020|0013", str(k + 1)),
            ("0008|0018", f"{series}.{k + 1}"),
        ):
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice{k:02d}.dcm"))
        writer.Execute(slice_image)
    volume = read_ct(tmp_path)
    assert volume.shape_ijk == (16, 16, 5)
    np.testing.assert_allclose(volume.geometry.spacing_mm, (0.8, 0.8, 2.5), atol=1e-4)
    np.testing.assert_array_equal(volume.array, array)


def generate_series_uid() -> str:
    from pydicom.uid import generate_uid

    return generate_uid()


def test_monochrome1_reads_back_with_bone_bright(tmp_path):
    attenuation, bone = hip_like_phantom()
    display = np.rint(4095 * (0.1 + 0.8 * attenuation)).astype(np.uint16)  # MONOCHROME2: bone high
    path = write_dx(
        tmp_path / "mono1.dcm", 4095 - display, PhotometricInterpretation="MONOCHROME1", PixelSpacing=[0.5, 0.5]
    )
    radiograph = read_radiograph(path)
    assert radiograph.photometric_interpretation == "MONOCHROME1"
    assert radiograph.pixels[bone].mean() > radiograph.pixels[~bone].mean() + 1000
    np.testing.assert_allclose(radiograph.pixels, display)


def test_rescale_spacing_and_acquisition_attributes(tmp_path):
    attenuation, bone = hip_like_phantom()
    stored = np.rint(1000 * attenuation).astype(np.uint16)
    path = write_dx(
        tmp_path / "dx.dcm",
        stored,
        RescaleSlope=2.0,
        RescaleIntercept=-100.0,
        ImagerPixelSpacing=[0.15, 0.15],
        EstimatedRadiographicMagnificationFactor=1.2,
        DistanceSourceToDetector=1100.0,
        DistanceSourceToPatient=900.0,
        ImageLaterality="R",
        ViewPosition="AP",
        WindowCenter=[1000, 900],
        WindowWidth=[2000, 1500],
        VOILUTFunction="SIGMOID",
    )
    radiograph = read_radiograph(path)
    np.testing.assert_allclose(radiograph.pixels, 2.0 * stored - 100.0)
    assert radiograph.pixel_spacing_mm == pytest.approx((0.125, 0.125))  # 0.15 mm at the detector / 1.2
    assert "EstimatedRadiographicMagnificationFactor" in radiograph.spacing_source
    assert radiograph.imager_pixel_spacing_mm == (0.15, 0.15)
    assert radiograph.source_to_detector_mm == 1100.0 and radiograph.source_to_patient_mm == 900.0
    assert radiograph.laterality == "R" and radiograph.view_position == "AP"
    assert radiograph.window_center == [1000.0, 900.0] and radiograph.window_width == [2000.0, 1500.0]
    assert radiograph.voi_lut_function == "SIGMOID"
    assert not radiograph.warnings


def test_missing_spacing_is_reported_not_guessed(tmp_path):
    attenuation, _ = hip_like_phantom()
    radiograph = read_radiograph(write_dx(tmp_path / "nospacing.dcm", np.rint(1000 * attenuation)))
    assert radiograph.pixel_spacing_mm is None
    assert any("no pixel spacing" in warning for warning in radiograph.warnings)
    detector_only = read_radiograph(
        write_dx(tmp_path / "detector.dcm", np.rint(1000 * attenuation), ImagerPixelSpacing=[0.2, 0.2])
    )
    assert detector_only.pixel_spacing_mm == (0.2, 0.2)
    assert any("detector only" in warning for warning in detector_only.warnings)


def test_a_stated_magnification_brings_a_detector_spacing_to_the_patient(tmp_path):
    """ImagerPixelSpacing only: the spacing at the hip is the detector's over the magnification the user states
    (0.2 mm / 1.25 = 0.16 mm) and the warning goes; a file that states its spacing at the patient keeps it."""
    attenuation, _ = hip_like_phantom()
    stored = np.rint(1000 * attenuation)
    detector_only = read_radiograph(write_dx(tmp_path / "detector.dcm", stored, ImagerPixelSpacing=[0.2, 0.2]))
    assert detector_only.state_magnification(1.25, "--magnification")
    assert detector_only.pixel_spacing_mm == pytest.approx((0.16, 0.16))
    assert detector_only.spacing_source == "ImagerPixelSpacing/--magnification"
    assert not detector_only.warnings
    at_patient = read_radiograph(
        write_dx(tmp_path / "patient.dcm", stored, ImagerPixelSpacing=[0.2, 0.2], PixelSpacing=[0.17, 0.17])
    )
    assert not at_patient.state_magnification(1.25, "--magnification")
    assert at_patient.pixel_spacing_mm == (0.17, 0.17) and at_patient.spacing_source == "PixelSpacing"


def test_png_jpeg_and_16_bit_tiff(tmp_path):
    import tifffile

    attenuation, bone = hip_like_phantom(128, 96)
    eight_bit = np.rint(255 * (0.1 + 0.8 * attenuation)).astype(np.uint8)
    Image.fromarray(eight_bit).save(tmp_path / "xray.png")
    Image.fromarray(eight_bit).save(tmp_path / "xray.jpg", quality=95)
    sixteen_bit = np.rint(65535 * (0.1 + 0.8 * attenuation)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "xray.tif", sixteen_bit)
    Image.fromarray(np.stack([eight_bit] * 3, axis=-1)).save(tmp_path / "grey_as_rgb.png")
    np.testing.assert_array_equal(read_radiograph(tmp_path / "xray.png").pixels, eight_bit)
    np.testing.assert_allclose(read_radiograph(tmp_path / "xray.jpg").pixels, eight_bit, atol=12)
    tiff = read_radiograph(tmp_path / "xray.tif")
    np.testing.assert_array_equal(tiff.pixels, sixteen_bit)
    assert tiff.bits_stored == 16 and tiff.pixel_spacing_mm is None and tiff.warnings
    np.testing.assert_array_equal(read_radiograph(tmp_path / "grey_as_rgb.png").pixels, eight_bit)


# --- bad input: one clear error naming the file and the problem ---------------------------------------


@pytest.fixture()
def bad_files(tmp_path, shared_data):
    files = {}
    original = shared_data / "xray" / "ddh_pediatric" / "331_DDH_1.dcm"
    data = original.read_bytes()
    files["truncated"] = tmp_path / "truncated.dcm"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["text"] = tmp_path / "notes.dcm"
    files["text"].write_text("this is a text file, not an image\n")
    rng = np.random.default_rng(1)
    photo = np.zeros((120, 160, 3), np.uint8)
    photo[..., 0] = rng.integers(150, 255, (120, 160))  # a reddish photograph
    photo[..., 2] = rng.integers(0, 80, (120, 160))
    files["photo"] = tmp_path / "holiday.jpg"
    Image.fromarray(photo).save(files["photo"])
    files["png_as_ct"] = tmp_path / "xray.png"
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(files["png_as_ct"])
    raw = tmp_path / "zero.raw"
    raw.write_bytes(np.zeros((4, 4, 4), np.int16).tobytes())
    files["zero_spacing"] = tmp_path / "zero_spacing.mhd"
    files["zero_spacing"].write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
        "ElementSpacing = 0 0 0\nElementDataFile = zero.raw\n"
    )
    nan = sitk.GetImageFromArray(np.full((4, 8, 8), np.nan, np.float32))
    files["nan_ct"] = tmp_path / "nan.mha"  # NIfTI readers turn NaN into 0
    sitk.WriteImage(nan, str(files["nan_ct"]))
    return files


@pytest.mark.parametrize(
    "name, reader, message",
    [
        ("truncated", read_radiograph, "truncated"),
        ("text", read_radiograph, "not a readable DICOM"),
        ("photo", read_radiograph, "colour image"),
        ("png_as_ct", read_ct, "2D image"),
        ("zero_spacing", read_ct, "spacing"),
        ("nan_ct", read_ct, "NaN"),
    ],
)
def test_bad_input_gives_one_clear_error(bad_files, name, reader, message):
    with pytest.raises(InputError, match=message) as caught:
        reader(bad_files[name])
    assert str(bad_files[name]) in str(caught.value)


def test_ct_reader_refuses_a_radiograph_dicom(shared_data):
    with pytest.raises(InputError, match="modality is DX, not CT"):
        read_ct(shared_data / "xray" / "ddh_pediatric" / "331_DDH_1.dcm")


def test_gzip_of_nothing_is_refused(tmp_path):
    path = tmp_path / "empty.nii.gz"
    with gzip.open(path, "wb"):
        pass
    with pytest.raises(InputError, match=str(path)):
        read_ct(path)
    shutil.rmtree(tmp_path / "missing", ignore_errors=True)
    with pytest.raises(InputError, match="does not exist"):
        read_ct(tmp_path / "missing")


def test_radiograph_type_comes_from_the_content_not_the_suffix(tmp_path):
    attenuation, _ = hip_like_phantom()
    grey = (255 * attenuation).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "really_a_png.dcm", format="PNG")
    png = read_radiograph(tmp_path / "really_a_png.dcm")
    np.testing.assert_array_equal(png.pixels, grey.astype(np.float32))
    dicom = write_dx(tmp_path / "IM0001", (4095 * attenuation).astype(np.uint16))  # no suffix, as PACS exports
    shutil.copyfile(dicom, tmp_path / "really_a_dicom.png")
    for path in (dicom, tmp_path / "really_a_dicom.png"):
        radiograph = read_radiograph(path)
        assert radiograph.modality == "DX" and radiograph.pixels.max() == 4095.0


def test_a_tiff_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    import resource

    import tifffile

    from bmdgan.io.radiograph import MAX_RADIOGRAPH_PIXELS

    path = tmp_path / "big.tif"
    image = tifffile.memmap(path, shape=(8000, 8000), dtype=np.uint8)  # 64 megapixels, a sparse file
    del image
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InputError, match=f"64 megapixels\\), more than the {MAX_RADIOGRAPH_PIXELS // 10**6}"):
        read_radiograph(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32_000  # kB: nothing was decoded


def test_real_ct_passes_the_hounsfield_checks_and_its_offset_or_rescaled_copies_do_not(shared_data):
    from bmdgan.io.ct_checks import check_hounsfield

    hu = read_ct(shared_data / "ct" / "ibsi_sts" / "STS_012.nii.gz").array
    check_hounsfield(hu, shared_data)  # air, fat and soft tissue where a CT has them
    with pytest.raises(InputError, match=r"\+1024 offset"):
        check_hounsfield(hu + 1024, shared_data)
    with pytest.raises(InputError, match="Hounsfield"):  # an MR-like rescaling: no air, no fat
        check_hounsfield((hu - hu.min()) / 4, shared_data)
    with pytest.raises(InputError, match="Hounsfield"):  # in other units than HU, e.g. attenuation 1/mm
        check_hounsfield(0.02 * (1 + hu / 1000), shared_data)
