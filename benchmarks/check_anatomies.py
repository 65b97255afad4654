"""Which virtual anatomies (:mod:`bmdgan.cohort.anatomy`) are refused, why, and whether the CT analysis finds each
deformed femur where the deformation put it.

Prepares every hip of the given CTs (cached in ``--prepared``, as ``simulate-cohort`` does), makes ``--count``
anatomies of each CT (a whole pelvis's two hips in one deformed CT) with ``--seed`` (the draws of ``simulate-cohort
--anatomies COUNT --seed SEED``) and prepares each hip from its own deformed CT. For each hip it prints the draw, the
head centre found against the source's head carried by the deformation (the inverse of its pull-back map; in mm), and
the CT-aBMD (g/cm2) of source and anatomy; a refused one prints its reason. The head shift checks the analysis, not the
deformation: labels, landmarks and ground truth are measured again on the new CT, so a head found elsewhere is a fault
of the hip search.

Usage (about 1 min a whole-pelvis hip and 30 s a thigh crop on one core):

    python benchmarks/check_anatomies.py ../shared/data/ct/ibsi_sts ../shared/data/ct/pelvic_reference \
        ../shared/data/ct/totalsegmentator_example/example_ct.nii.gz --prepared OUT/prepared --count 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="CT files, or folders of .nii.gz/.nrrd/.mha CTs")
    parser.add_argument("--prepared", required=True, help="cache folder of the prepared CTs and anatomies")
    parser.add_argument("--count", type=int, default=2, help="anatomies per bone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()

    from bmdgan.cli.ct_options import ct_paths
    from bmdgan.cohort.anatomy import anatomy_hips, head_drift_mm, prepare_anatomies
    from bmdgan.cohort.generator import prepare_cts
    from bmdgan.cohort.prepared_ct import load_prepared, prepared_bones

    folder = Path(args.prepared)
    folder.mkdir(parents=True, exist_ok=True)
    ct_ids, refused_cts = prepare_cts(ct_paths(args.inputs), folder)
    for ct_id, reason in sorted(refused_cts.items()):
        print(f"refused CT {ct_id}: {reason}")
    rows = []
    for ct_id in ct_ids:
        _, skipped = prepare_anatomies(folder, [ct_id], args.count, args.seed)
        sources = {key: load_prepared(folder, key) for key in prepared_bones(folder, ct_id)}
        for index in range(args.count):
            for key, draw in anatomy_hips(folder, ct_id, index, args.seed)[1]:
                source = sources[key]
                source_abmd = source.calibration["full_ct_abmd_g_cm2"]
                row = {"anatomy": draw.anatomy_id, "draw": draw.to_dict(), "source_abmd_g_cm2": source_abmd}
                if draw.anatomy_id in skipped:
                    row["refused"] = skipped[draw.anatomy_id]
                else:
                    made = load_prepared(folder, draw.anatomy_id)
                    row["head_shift_mm"] = head_drift_mm(source, draw, made.head_centre_lps)
                    row["side_kept"] = made.side == source.side
                    row["abmd_g_cm2"] = made.calibration["full_ct_abmd_g_cm2"]
                rows.append(row)
                print(_line(row), flush=True)
    refused = [row for row in rows if "refused" in row]
    shifts = [row["head_shift_mm"] for row in rows if "head_shift_mm" in row]
    print(
        f"{len(rows)} anatomies, {len(refused)} refused; head found within 3 mm of its carried place: "
        f"{sum(s <= 3.0 for s in shifts)}/{len(shifts)} (largest {max(shifts, default=float('nan')):.1f} mm)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def _line(row: dict) -> str:
    draw = row["draw"]
    what = (
        f"size {draw['size_factor']:.3f} neck {draw['neck_length_factor']:.3f} "
        f"NSA {draw['neck_shaft_change_deg']:+.1f} deg cortex {draw['cortical_kept']:.2f}"
    )
    if "refused" in row:
        return f"{row['anatomy']:28s} {what}  REFUSED: {row['refused']}"
    return (
        f"{row['anatomy']:28s} {what}  head {row['head_shift_mm']:4.1f} mm off, side kept {row['side_kept']}, "
        f"CT-aBMD {row['source_abmd_g_cm2']:.3f} -> {row['abmd_g_cm2']:.3f} g/cm2"
    )


if __name__ == "__main__":
    main()
