"""``bmdgan simulate-xray``: simulated AP radiographs (DICOM DX + 16-bit PNG + geometry JSON) from a CT."""

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
    parser.add_argument("--density", type=Path,
                        help="calibrated bone density volume (mg/cm3 HA) on the CT grid; default: from HU")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first radiograph (default %(default)s)")
    parser.add_argument("--count", type=int, default=1,
                        help="number of radiographs, seeds seed..seed+count-1, parameters drawn per seed")
    parser.add_argument("--params", type=Path,
                        help="JSON of simulation parameters to fix (others are drawn from the documented ranges)")
    parser.add_argument("--patient-id", default="SIM",
                        help="pseudonymous PatientID prefix written to DICOM (never a real identifier)")
    add_device(parser)
    add_geometry_arguments(parser, default_pixel_mm=0.5)


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np
    from ...progress import progress_bar

    from ...errors import InputError
    from ...io import read_ct
    from ...io.ct import read_volume
    from bmdgan.atomic import atomic_write_text
    from ..projection_options import geometry_from_arguments
    from ...projection.dicom_writer import write_dx_dicom
    from ...projection.image_io import write_png16
    from ...projection.simulator import SimulationParameters, material_projections, sample_parameters, \
        simulate_radiograph

    if args.count < 1:
        raise InputError(None, f"--count must be at least 1, got {args.count}", "give a positive count")
    fixed = {}
    if args.params is not None:
        try:
            fixed = json.loads(args.params.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(args.params, f"cannot be read as JSON ({error})", "give a JSON object of parameters") \
                from None
        if not isinstance(fixed, dict):
            raise InputError(args.params, "is not a JSON object", "write {\"effective_energy_kev\": 50, ...}")
        SimulationParameters.from_dict(fixed)  # reject unknown names before any work
    ct = read_ct(args.ct)
    density = None
    if args.density is not None:
        density_volume = read_volume(args.density, "mg/cm3")  # not HU: no CT-number checks
        same_grid = (density_volume.array.shape == ct.array.shape and np.allclose(
            density_volume.geometry.ijk_to_lps(), ct.geometry.ijk_to_lps(), atol=1e-3))
        if not same_grid:
            raise InputError(args.density, "the density volume is not on the CT grid", "resample it onto the CT")
        density = density_volume.array
    geometry = geometry_from_arguments(args, ct)
    name = args.name or Path(args.ct).name.split(".")[0]
    areal = material_projections(ct, geometry, density, device=args.device, progress=True)
    written = []
    for seed in progress_bar(range(args.seed, args.seed + args.count), desc="simulating", unit="radiograph",
                     disable=args.count == 1):
        rng = np.random.default_rng(seed)
        parameters = SimulationParameters.from_dict(fixed, base=sample_parameters(rng))
        simulated = simulate_radiograph(ct, geometry, parameters, rng=rng, areal_density_g_per_cm2=areal)
        stem = args.out / f"{name}_seed{seed}"
        write_dx_dicom(stem.with_suffix(".dcm"), simulated, patient_id=f"{args.patient_id}-{seed:05d}", seed=seed)
        write_png16(stem.with_suffix(".png"), simulated.processed)
        geometry.save(stem.with_suffix(".geometry.json"))
        record = {"seed": seed, "source_ct": str(args.ct), "density": str(args.density) if args.density else None,
                  "parameters": parameters.to_dict(), "source_to_patient_mm": simulated.source_to_patient_mm}
        atomic_write_text(stem.with_suffix(".params.json"), json.dumps(record, indent=2) + "\n")
        written.append(stem)
    print(f"wrote {len(written)} radiograph(s) to {args.out} ({geometry.detector_columns}x{geometry.detector_rows}"
          f" px, {geometry.column_spacing_mm:g} mm detector pitch, SID {geometry.source_to_detector_mm:g} mm)")
    return 0
