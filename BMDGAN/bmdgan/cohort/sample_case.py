"""The bundled sample case: one virtual patient simulated from a held-out real CT, written as a DX DICOM
radiograph with its CT-derived ground truth, so that the main job shows an honest estimate."""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from .generator import CohortSettings, ct_projector, patient_of, simulate_case
from .prepared_ct import PreparedCT, prepare_ct, save_prepared


def simulated_hip_view(prepared: PreparedCT, seed: int = 2024, patient: int = 0, pose: str = "standing"):
    """(manifest record, SimulatedRadiograph of the whole single-hip view oriented as a right hip, 16-bit pixels) of
    one virtual patient of ``prepared``'s hip, at the reference site (:mod:`bmdgan.cohort.generator`)."""
    with tempfile.TemporaryDirectory() as prepared_folder:  # the CT's analysis is not part of the output
        save_prepared(prepared, Path(prepared_folder))
        settings = CohortSettings(prepared_folder, seed=seed, patients_per_ct=1, poses=(pose,))
        prepared, projector = ct_projector(settings.prepared_folder, prepared.cache_key)
        record, _, simulated, oriented = simulate_case(
            settings, prepared, projector, patient_of(settings, prepared.ct_id, patient, prepared.cache_key), pose
        )
    return record, replace(simulated, pixels=np.rint(oriented).astype(np.uint16))


def write_sample_case(
    ct_path: str | Path, out_folder: str | Path, seed: int = 2024, patient: int = 0, pose: str = "standing"
) -> tuple[Path, Path]:
    """(DICOM path, ground-truth JSON path) of one simulated radiograph of ``ct_path``'s hip."""
    from ..projection.dicom_writer import write_dx_dicom

    out_folder = Path(out_folder)
    ct_id = Path(ct_path).name.split(".")[0]
    record, radiograph = simulated_hip_view(prepare_ct(ct_path, ct_id), seed, patient, pose)
    name = f"{ct_id}_simulated_{pose}"
    dicom = out_folder / f"{name}.dcm"
    write_dx_dicom(dicom, radiograph, patient_id=f"{ct_id}-virtual", seed=seed)
    truth = out_folder / f"{name}_truth.json"
    atomic_write_text(
        truth,
        json.dumps(
            {
                "about": f"Simulated AP radiograph of the {record.side} hip of real CT {ct_id} (virtual patient "
                f"{record.patient_id}, pose {pose}), oriented as a right hip, one hip per image; the ground truth "
                "is measured on the same CT with the same bone-density factors (bmdgan.cohort).",
                "ct": ct_id,
                "side_in_ct": record.side,
                "image_shows": "one hip and the upper thigh, oriented as a right hip",
                "femoral_head_centre_px": json.loads(record.provenance)["head_centre_px"],
                "ct_abmd_g_cm2": record.ct_abmd_g_cm2,
                "qct_vbmd_mg_cm3": record.qct_vbmd_mg_cm3,
                "acquisition": CohortSettings.acquisition,
                "provenance": json.loads(record.provenance),
            },
            indent=2,
        ),
    )
    return dicom, truth
