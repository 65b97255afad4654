"""How much does a cohort's radiograph say about its aBMD across bones? A ceiling check for whole-CT folds.

For every image of a cohort (``simulate-cohort`` folder with whole-CT folds), grey-level features are measured in
the true proximal-femur region (from the case's own PF-DRR, so no segmentation error) after the image's own
1/99 percentile scaling: the region's mean, the mean of a ring 3-8 pixels around it, their contrast, the region's
spread and 10-90 % range, its area and the image mean. A linear fit of CT-aBMD (g/cm2) on them, trained on the
other folds' CTs, predicts each held-out CT's images. Where such a fit with perfect masks cannot follow aBMD across
bones, a network has to find what the grey levels alone do not show; within one CT the same features do follow it
(printed per CT), which tells how much of the difficulty is the change of bone rather than the imaging.

Such a fit is no ceiling: a network can estimate the soft tissue under the bone from everything around it, and the
shipped model ranks one unseen bone's virtual patients far better (PCC 0.78). ``--physics PREPARED`` asks the physics
instead: it simulates single-hip views of every real bone of a cohort's ``prepared`` folder again (``--patients``
virtual patients x 2 poses each, the cohort's seed and site) and reports how the true aBMD relates to what the
pixels of the true PF region physically hold: the femur's mineral (the PF-DRR), all bone mineral on those rays
(femur and the pelvis over it, which the decomposition must separate), soft tissue, fat and the raw detector log
signal before any console processing, across CTs and within each CT.

Usage: python benchmarks/check_density_signal.py COHORT [COHORT ...]
       python benchmarks/check_density_signal.py --physics COHORT/prepared [--patients 4]
"""

from __future__ import annotations

import argparse

import numpy as np

FEATURES = ("PF mean", "ring mean", "PF - ring contrast", "PF spread", "PF 10-90 % range", "PF area", "image mean")


def image_features(radiograph: np.ndarray, pf_drr_g_cm2: np.ndarray) -> list[float]:
    """The :data:`FEATURES` of one image (grey levels scaled by the image's own 1/99 percentiles)."""
    from scipy import ndimage

    region = pf_drr_g_cm2 > 0.05
    ring = ndimage.binary_dilation(region, iterations=8) & ~ndimage.binary_dilation(region, iterations=3)
    low, high = np.percentile(radiograph, [1, 99])
    scaled = (radiograph - low) / max(float(high - low), 1e-6)
    inside, around = scaled[region], scaled[ring]
    return [
        float(inside.mean()),
        float(around.mean()),
        float(inside.mean() - around.mean()),
        float(inside.std()),
        float(np.percentile(inside, 90) - np.percentile(inside, 10)),
        float(region.mean()),
        float(scaled.mean()),
    ]


def held_out_predictions(features: np.ndarray, truth: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each fold's images predicted by a least-squares line fitted on the other folds."""
    predictions = np.empty_like(truth)
    for fold in np.unique(folds):
        train = folds != fold
        design = np.c_[features[train], np.ones(train.sum())]
        weights = np.linalg.lstsq(design, truth[train], rcond=None)[0]
        predictions[~train] = np.c_[features[~train], np.ones((~train).sum())] @ weights
    return predictions


PHYSICS = ("PF-DRR mean", "all bone mineral", "soft tissue", "fat", "raw log signal")
"""What :func:`physics_rows` measures over the true PF region of each image (g/cm2; the log signal dimensionless)."""


def region_mean(image: np.ndarray, flips: tuple[bool, bool], roi, region: np.ndarray) -> float:
    """Mean over the PF region of a whole simulated image, flipped (rows, columns) and cut as the cohort's input."""
    from bmdgan.cohort.generator import oriented
    from bmdgan.datasets.normalise import apply_hip_roi

    image = np.ascontiguousarray(oriented(image, *flips), np.float32)
    return float(apply_hip_roi(image, roi, "edge")[region].mean())


def physics_rows(prepared_folder: str, patients: int) -> list[tuple[str, float, list[float]]]:
    """(source CT, true aBMD g/cm2, the :data:`PHYSICS` means) of every single-hip view simulated again."""
    import json
    from pathlib import Path

    from tqdm import tqdm

    from bmdgan.cohort.generator import CohortSettings, ct_projector, orientation_flips, patient_of, simulate_case
    from bmdgan.cohort.prepared_ct import real_bones
    from bmdgan.datasets.normalise import plan_hip_roi

    folder = Path(prepared_folder)
    cohort = json.loads((folder.parent / "dataset.json").read_text())["settings"]
    settings = CohortSettings(
        str(folder), seed=cohort["seed"], acquisition=cohort["acquisition"], image_shape=tuple(cohort["image_shape"])
    )
    bones_of = real_bones(folder)
    rows = []
    for ct_id, key in tqdm([(ct_id, key) for ct_id, keys in bones_of.items() for key in keys], desc="bones"):
        prepared, projector = ct_projector(str(folder), key, crop_to_hip=len(bones_of[ct_id]) > 1)
        for index in range(patients):
            patient = patient_of(settings, ct_id, index, bones_of[ct_id][0])
            for pose in ("standing", "abduction"):
                record, images, simulated, _ = simulate_case(settings, prepared, projector, patient, pose)
                flips = orientation_flips(prepared, simulated.geometry)
                provenance = json.loads(record.provenance)
                roi = plan_hip_roi(
                    np.array(provenance["head_centre_px"]),
                    np.array(provenance["neck_point_px"]),
                    "right",
                    simulated.geometry.spacing_at_mm(prepared.head_centre_lps),
                    settings.image_shape,
                )

                region = images["drr_pf"] > 0.05
                adipose, soft, mineral = simulated.areal_density_g_per_cm2

                rows.append(
                    (
                        prepared.ct_id,
                        record.ct_abmd_g_cm2,
                        [
                            float(images["drr_pf"][region].mean()),
                            region_mean(mineral, flips, roi, region),
                            region_mean(soft, flips, roi, region),
                            region_mean(adipose, flips, roi, region),
                            region_mean(simulated.log_signal, flips, roi, region),
                        ],
                    )
                )
    return rows


def print_physics(rows: list[tuple[str, float, list[float]]]) -> None:
    sources = np.array([r[0] for r in rows])
    truth = np.array([r[1] for r in rows])
    values = np.array([r[2] for r in rows])
    print(f"{len(rows)} views of {len(set(sources))} CTs; correlation with the true aBMD:")
    print("| in the true PF region | across all CTs | within one CT (median) |\n| --- | --- | --- |")
    for column, name in enumerate(PHYSICS):
        within = [np.corrcoef(values[sources == ct, column], truth[sources == ct])[0, 1] for ct in set(sources)]
        print(f"| {name} | {np.corrcoef(values[:, column], truth)[0, 1]:.2f} | {np.median(within):.2f} |")
    ratio = {ct: float(np.mean(values[sources == ct, 1] / truth[sources == ct])) for ct in sorted(set(sources))}
    print("all bone mineral / aBMD per CT: " + ", ".join(f"{ct} {r:.2f}" for ct, r in ratio.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cohorts", nargs="*")
    parser.add_argument("--physics", metavar="PREPARED", help="a cohort's prepared folder: simulate views again")
    parser.add_argument("--patients", type=int, default=4, help="virtual patients per bone with --physics")
    args = parser.parse_args()
    if args.physics:
        print_physics(physics_rows(args.physics, args.patients))

    from bmdgan.datasets.folds import source_ct_of
    from bmdgan.datasets.format import read_manifest

    for cohort in args.cohorts:
        records = read_manifest(cohort)
        features = np.array(
            [
                image_features(np.load(f"{cohort}/{r.images['radiograph']}"), np.load(f"{cohort}/{r.images['drr_pf']}"))
                for r in records
            ]
        )
        truth = np.array([r.ct_abmd_g_cm2 for r in records])
        folds = np.array([r.fold for r in records])
        sources = np.array([source_ct_of(r) for r in records])
        print(f"{cohort}: {len(records)} images, {len(set(sources))} CTs, aBMD SD {truth.std():.3f} g/cm2")
        print("| features | held-out-CT PCC | MAE (g/cm2) |\n| --- | --- | --- |")
        for name, columns in (("PF - ring contrast", [2]), ("all seven", list(range(len(FEATURES))))):
            predicted = held_out_predictions(features[:, columns], truth, folds)
            pcc = np.corrcoef(predicted, truth)[0, 1]
            print(f"| {name} | {pcc:.2f} | {np.abs(predicted - truth).mean():.3f} |")
        within = {
            ct: np.corrcoef(features[sources == ct, 2], truth[sources == ct])[0, 1] for ct in sorted(set(sources))
        }
        print("PF - ring contrast vs aBMD within each CT: " + ", ".join(f"{ct} {r:.2f}" for ct, r in within.items()))


if __name__ == "__main__":
    main()
