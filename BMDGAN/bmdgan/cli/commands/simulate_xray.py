"""``bmdgan simulate-xray``: simulated AP radiographs (DICOM DX + 16-bit PNG + geometry JSON) from a CT.

Views: ``centred`` (an AP view of the whole CT box, or ``--geometry``), ``ap-pelvis`` (the clinic's AP pelvis of
a whole-pelvis CT: 430 x 350 mm detector, body only, collimated to the scanned range; see
:mod:`bmdgan.projection.ap_pelvis`), ``auto`` (AP pelvis for a CT that holds both hips, else centred)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "simulate radiographs (DICOM DX, 16-bit PNG, geometry and parameter JSON) from a CT in HU"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..options import add_device, add_out
    from ..projection_options import add_geometry_arguments

    parser.add_argument("ct", type=Path, help="CT volume in HU")
    add_out(parser, "folder for the outputs")
    parser.add_argument("--name", help="file name prefix (default: the CT file name)")
    parser.add_argument(
        "--density", type=Path, help="calibrated bone density volume (mg/cm3 HA) on the CT grid; default: from HU"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first radiograph (default %(default)s)")
    parser.add_argument(
        "--count",
        type=int,
        default=1,
        help="number of radiographs, seeds seed..seed+count-1, parameters drawn per seed",
    )
    parser.add_argument(
        "--params", type=Path, help="JSON of simulation parameters to fix (others are drawn from the documented ranges)"
    )
    parser.add_argument(
        "--patient-id", default="SIM", help="pseudonymous PatientID prefix written to DICOM (never a real identifier)"
    )
    add_device(parser)
    parser.add_argument(
        "--view",
        choices=("auto", "centred", "ap-pelvis"),
        default="auto",
        help="'centred': AP view of the whole CT box (or --geometry); 'ap-pelvis': the clinic's AP "
        "pelvis radiograph (430 x 350 mm detector, --sid-mm, --pixel-mm; couch and everything "
        "outside the body removed; detector collimated to the rows whose rays stay in the scan); "
        "'auto' (default): ap-pelvis for a CT holding both hips, else centred",
    )
    parser.add_argument(
        "--body-mask",
        type=Path,
        metavar="FILE",
        help="ap-pelvis: the patient's body as a mask on the CT grid (non-zero = body; default: found in the CT)",
    )
    parser.add_argument(
        "--centre-lps",
        metavar="X,Y,Z",
        help="ap-pelvis: LPS point (mm) the central ray aims at (default: the body's midline and "
        "mid-depth, the middle of the scan)",
    )
    add_geometry_arguments(parser, default_pixel_mm=0.5)


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from bmdgan.atomic import atomic_write_text

    from ...errors import InputError
    from ...io import read_ct
    from ...io.ct import read_volume
    from ...progress import progress_bar
    from ...projection.dicom_writer import write_dx_dicom
    from ...projection.image_io import write_png16
    from ...projection.simulator import (
        SimulationParameters,
        material_projections,
        sample_parameters,
        simulate_radiograph,
    )
    from ..projection_options import geometry_from_arguments

    if args.count < 1:
        raise InputError(None, f"--count must be at least 1, got {args.count}", "give a positive count")
    fixed = {}
    if args.params is not None:
        try:
            fixed = json.loads(args.params.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(
                args.params, f"cannot be read as JSON ({error})", "give a JSON object of parameters"
            ) from None
        if not isinstance(fixed, dict):
            raise InputError(args.params, "is not a JSON object", 'write {"effective_energy_kev": 50, ...}')
        SimulationParameters.from_dict(fixed)  # reject unknown names before any work
    ct = read_ct(args.ct)
    density = None
    if args.density is not None:
        density_volume = read_volume(args.density, "mg/cm3")  # not HU: no CT-number checks
        same_grid = density_volume.array.shape == ct.array.shape and np.allclose(
            density_volume.geometry.ijk_to_lps(), ct.geometry.ijk_to_lps(), atol=1e-3
        )
        if not same_grid:
            raise InputError(args.density, "the density volume is not on the CT grid", "resample it onto the CT")
        density = density_volume.array
    view, extra = _view(args, ct)
    if view == "ap-pelvis":
        geometry, areal, pelvis = _ap_pelvis(args, ct, density)
        extra.update(pelvis)
    else:
        geometry = geometry_from_arguments(args, ct)
        areal = material_projections(ct, geometry, density, device=args.device, progress=True)
    name = args.name or Path(args.ct).name.split(".")[0]
    written = []
    for seed in progress_bar(
        range(args.seed, args.seed + args.count), desc="simulating", unit="radiograph", disable=args.count == 1
    ):
        rng = np.random.default_rng(seed)
        parameters = SimulationParameters.from_dict(fixed, base=sample_parameters(rng))
        simulated = simulate_radiograph(ct, geometry, parameters, rng=rng, areal_density_g_per_cm2=areal)
        stem = args.out / f"{name}_seed{seed}"
        write_dx_dicom(stem.with_suffix(".dcm"), simulated, patient_id=f"{args.patient_id}-{seed:05d}", seed=seed)
        write_png16(stem.with_suffix(".png"), simulated.processed)
        geometry.save(stem.with_suffix(".geometry.json"))
        record = {
            "seed": seed,
            "source_ct": str(args.ct),
            "density": str(args.density) if args.density else None,
            "parameters": parameters.to_dict(),
            "source_to_patient_mm": simulated.source_to_patient_mm,
            "view": view,
            **extra,
        }
        atomic_write_text(stem.with_suffix(".params.json"), json.dumps(record, indent=2) + "\n")
        written.append(stem)
    print(
        f"wrote {len(written)} radiograph(s) to {args.out} ({geometry.detector_columns}x{geometry.detector_rows}"
        f" px, {geometry.column_spacing_mm:g} mm detector pitch, SID {geometry.source_to_detector_mm:g} mm, "
        f"{view} view{_collimation_note(extra)})"
    )
    return 0


def _view(args: argparse.Namespace, ct) -> tuple[str, dict]:
    """The view to simulate: 'ap-pelvis' or 'centred' (``auto``: AP pelvis when the CT holds both hips)."""
    from ...errors import InputError

    if args.view == "ap-pelvis" and (args.geometry is not None or args.parallel):
        raise InputError(None, "--view ap-pelvis sets its own geometry", "leave out --geometry and --parallel")
    if args.view != "auto":
        return args.view, {}
    if args.geometry is not None or args.parallel:
        return "centred", {}
    import numpy as np

    from ...ct.pipeline import hip_sides
    from ...errors import BMDGANError
    from ...projection.ap_pelvis import WHOLE_PELVIS_MIN_WIDTH_MM
    from ...projection.geometry import volume_corners_lps

    if np.ptp(volume_corners_lps(ct.shape_ijk, ct.geometry.ijk_to_lps())[:, 0]) < WHOLE_PELVIS_MIN_WIDTH_MM:
        return "centred", {}
    try:
        sides = hip_sides(ct)
    except BMDGANError as error:  # no hip found: not a pelvis, the whole-CT view it is
        return "centred", {"hips_in_ct": [], "hip_search": str(error)}
    return ("ap-pelvis" if {"left", "right"} <= set(sides) else "centred"), {"hips_in_ct": sides}


def _ap_pelvis(args: argparse.Namespace, ct, density):
    """(geometry, material DRRs, JSON record) of the AP pelvis view of the CT's body."""
    import numpy as np

    from ...ct.pipeline import body_of
    from ...errors import InputError
    from ...io import read_label_volume
    from ...projection.ap_pelvis import AP_PELVIS_DETECTOR_MM, ap_pelvis_centre, project_ap_pelvis

    if args.body_mask is not None:
        body = read_label_volume(args.body_mask, like=ct).array > 0
        body_source = str(args.body_mask)
    else:
        body = body_of(ct)
        body_source = "found in the CT (bmdgan.ct.body.body_mask)"
    if args.centre_lps:
        try:
            centre = np.array([float(v) for v in args.centre_lps.split(",")])
        except ValueError:
            centre = np.zeros(0)
        if centre.shape != (3,):
            raise InputError(
                None,
                f"--centre-lps {args.centre_lps!r} is not three numbers X,Y,Z in mm",
                "write e.g. --centre-lps 0,-20,-250",
            )
    else:
        centre = ap_pelvis_centre(body, ct.geometry.ijk_to_lps())
    if (args.columns is None) != (args.rows is None):
        raise InputError(None, "--columns and --rows go together", "give both or neither")
    detector_mm = (
        AP_PELVIS_DETECTOR_MM if args.rows is None else (args.rows * args.pixel_mm, args.columns * args.pixel_mm)
    )
    given = {
        "source_to_detector_mm": args.sid_mm,
        "object_to_detector_mm": args.object_to_detector_mm,
        "pixel_spacing_mm": args.pixel_mm,
    }  # options left out keep the AP pelvis view's own defaults
    areal, geometry, collimation = project_ap_pelvis(
        ct,
        body,
        centre,
        bone_density_mg_per_cm3=density,
        device=args.device,
        detector_mm=detector_mm,
        **{name: value for name, value in given.items() if value is not None},
    )
    return (
        geometry,
        areal,
        {
            "body_mask": body_source,
            "centre_lps_mm": [round(float(v), 2) for v in centre],
            "detector_mm": list(detector_mm),
            "collimation": collimation.to_dict(),
        },
    )


def _collimation_note(extra: dict) -> str:
    collimation = extra.get("collimation")
    if not collimation or not collimation["collimated"]:
        return ""
    return (
        f"; collimated to {collimation['columns']}x{collimation['rows']} of {collimation['full_columns']}x"
        f"{collimation['full_rows']} px: the scan ends ({', '.join(collimation['limited_by'])})"
    )
