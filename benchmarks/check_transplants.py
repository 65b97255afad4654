"""Which femurs placed into another body (:mod:`bmdgan.cohort.transplant`) are refused, why, and what the CT analysis
measures on each new CT: where it finds the head (against the host's head centre, where the donor's head was put;
mm) and the PF region's CT-aBMD (g/cm2) of host, donor and transplant. The transplant's ground truth is measured on
its own CT, so it should follow the donor's bone (its density, its size), not the host's.

Prepares every hip of the given CTs (cached in ``--prepared``, as ``simulate-cohort`` does), makes ``--count``
transplant entries of every whole-pelvis CT (two donors an entry, one per side: ``ceil(donors / 2)`` entries give
each body every femur) and prepares each hip of the new CT. ``--picture`` draws, for the first entry, a coronal slab
of the host and of the new CT around each hip (HU window -200..1500).

Usage (about 2 min an entry on one core, after the CTs are prepared):

    python benchmarks/check_transplants.py ../shared/data/ct/ibsi_sts ../shared/data/ct/pelvic_reference \
        --prepared OUT/prepared --count 7 --picture transplant.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="CT files, or folders of .nii.gz/.nrrd/.mha CTs")
    parser.add_argument("--prepared", required=True, help="cache folder of the prepared CTs and transplants")
    parser.add_argument("--count", type=int, default=1, help="transplant entries per whole-pelvis CT")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--picture", help="PNG of the first entry: host and new CT, coronal slabs")
    args = parser.parse_args()

    from bmdgan.cli.ct_options import ct_paths
    from bmdgan.cohort.generator import prepare_cts
    from bmdgan.cohort.prepared_ct import load_prepared
    from bmdgan.cohort.transplant import host_cts, prepare_transplants, transplant_hips

    folder = Path(args.prepared)
    folder.mkdir(parents=True, exist_ok=True)
    _, refused_cts = prepare_cts(ct_paths(args.inputs), folder)
    for ct_id, reason in sorted(refused_cts.items()):
        print(f"refused CT {ct_id}: {reason}")
    _, refused = prepare_transplants(folder, args.count)
    rows = []
    for host_ct in host_cts(folder):
        for index in range(args.count):
            for host_key, donor_key, hip_key in transplant_hips(folder, host_ct, index)[1]:
                host, donor = (json.loads((folder / f"{key}.json").read_text()) for key in (host_key, donor_key))
                row = {
                    "transplant": hip_key,
                    "donor": donor_key,
                    "host_abmd_g_cm2": host["calibration"]["full_ct_abmd_g_cm2"],
                    "donor_abmd_g_cm2": donor["calibration"]["full_ct_abmd_g_cm2"],
                }
                if hip_key in refused:
                    row["refused"] = refused[hip_key]
                else:
                    made = load_prepared(folder, hip_key)
                    row["head_shift_mm"] = float(np.linalg.norm(made.head_centre_lps - host["head_centre_lps"]))
                    row["abmd_g_cm2"] = made.calibration["full_ct_abmd_g_cm2"]
                rows.append(row)
                print(_line(row), flush=True)
    made = [row for row in rows if "refused" not in row]
    print(f"{len(rows)} transplanted hips, {len(rows) - len(made)} refused")
    if len(made) > 2:
        abmd = np.array([[row["abmd_g_cm2"], row["donor_abmd_g_cm2"], row["host_abmd_g_cm2"]] for row in made])
        print(
            f"CT-aBMD of the transplants against the donors' PCC {np.corrcoef(abmd[:, 0], abmd[:, 1])[0, 1]:.2f}, "
            f"against the hosts' {np.corrcoef(abmd[:, 0], abmd[:, 2])[0, 1]:.2f}; "
            f"median |transplant - donor| {np.median(np.abs(abmd[:, 0] - abmd[:, 1])):.3f} g/cm2"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    if args.picture and made:
        _picture(folder, made[0]["transplant"], Path(args.picture))


def _line(row: dict) -> str:
    what = f"{row['transplant']:26s} donor {row['donor']:22s}"
    if "refused" in row:
        return f"{what} REFUSED: {row['refused']}"
    return (
        f"{what} head {row['head_shift_mm']:4.1f} mm off; CT-aBMD host {row['host_abmd_g_cm2']:.3f}, donor "
        f"{row['donor_abmd_g_cm2']:.3f} -> transplant {row['abmd_g_cm2']:.3f} g/cm2"
    )


def _frame_slice(prepared, array: np.ndarray) -> np.ndarray:
    """HU on the plane of the femur's neutral frame through its head centre (lateral x up, 1 mm pixels): the neck
    and shaft in one picture, whatever the scan's axes."""
    from scipy.ndimage import map_coordinates

    lateral, up = np.meshgrid(np.arange(-70.0, 90.0), np.arange(-160.0, 60.0))
    axes = np.asarray(prepared.frame_axes, float)
    points = prepared.head_centre_lps + lateral[..., None] * axes[0] + up[..., None] * axes[2]
    ijk_to_lps = prepared.hu.geometry.ijk_to_lps()
    ijk = (points.reshape(-1, 3) - ijk_to_lps[:3, 3]) @ np.linalg.inv(ijk_to_lps[:3, :3]).T
    return map_coordinates(array, ijk[:, ::-1].T, order=1, cval=-1000.0).reshape(lateral.shape)


def _picture(folder: Path, hip_key: str, path: Path) -> None:
    """The host's femur, the new CT and the donor's femur, each on its neutral-frame plane through the head centre."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bmdgan.cohort.prepared_ct import load_prepared

    record = json.loads((folder / f"{hip_key}.transplant.json").read_text())
    host, donor = load_prepared(folder, record["host_key"]), load_prepared(folder, record["donor_key"])
    made = load_prepared(folder, hip_key)
    panels = [
        (f"host {record['host_key']}", host, host.hu.array),
        (f"{hip_key} (measured again)", made, made.hu.array),
        (f"donor {record['donor_key']}", donor, donor.hu.array),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(13, 6.5))
    for axis, (title, prepared, array) in zip(axes, panels):
        axis.imshow(_frame_slice(prepared, array), cmap="gray", vmin=-200, vmax=1500, origin="lower")
        axis.set_title(title, fontsize=10)
        axis.axis("off")
    figure.suptitle(
        "Each femur on its neutral-frame plane (neck and shaft axes) through its head centre; HU -200..1500"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    print(f"picture -> {path}")


if __name__ == "__main__":
    main()
