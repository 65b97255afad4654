"""Registration quality off our own simulator (issue 23): success rate, error and the grade's confusion table.

Radiographs of the shared CTs (IBSI thigh crops, Pelvic-Reference both hips cut to the hip region, the
TotalSegmentator pelvis) from two configurations unlike ``simulate-xray``'s defaults:

* ``site``: our simulator (:mod:`bmdgan.projection.simulator`) with other sites' acquisitions
  (:mod:`bmdgan.projection.site_protocol`): ``varied`` (every image its own site) and ``site:N`` alternately,
  0.5 mm detector pitch.
* ``other``: a differently written simulator (:func:`other_simulator`, independent of ours): its own material
  split and attenuation laws, a polyenergetic Kramers spectrum through aluminium, a heel effect, a detector blur
  with a glare tail, Poisson and electronic noise, a log, multi-scale unsharp masking, range compression, a gamma,
  S-shaped or histogram-equalising tone curve, 8- or 10-bit output, 0.6 mm pitch.

The true view: an AP view whose central ray passes up to 70 mm beside the CT centre, turned up to 10 degrees about
the beam and 5 out of plane, 30 mm deeper or shallower; the detector at least a 350 x 430 mm cassette, with the bone
inside it. Each radiograph is registered twice, like ``bmdgan register`` does:

* ``offset``: from the truth moved by up to 10 degrees (random axis through the bone centroid) and 20 mm (random
  direction), global search off (a ``--geometry`` pose);
* ``no start``: from an AP view of the CT centre on the detector centre (no ``--geometry`` pose, no landmarks),
  global search on with the hip detector's start.

Error: mTRE (mm) of the bone voxels (HU > 200; the TotalSegmentator femur masks in its CT), as
``benchmarks/bench_registration.py`` defines it. Rows of the confusion table: accurate (< 2 mm), in between
(2-5 mm), inaccurate (> 5 mm); columns: the grade. Writes ``quality_check.json`` (every case) and
``registration_quality.png`` (error against final GC, coloured by grade) to ``--out``.

Usage: python benchmarks/check_registration_quality.py --out /tmp/quality [--cases 12] [--max-minutes 14]
       [--threads 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.spatial.transform import Rotation

from bmdgan.io import Volume, read_ct, read_label_volume
from bmdgan.projection import ProjectionGeometry, camera_pose
from bmdgan.projection.geometry import DEFAULT_OBJECT_TO_DETECTOR_MM, ap_pose, volume_centre_lps
from bmdgan.projection.projector import Projector
from bmdgan.projection.simulator import simulate_radiograph
from bmdgan.projection.site_protocol import parse_acquisition
from bmdgan.registration.metrics import mean_target_error_mm
from bmdgan.registration.pipeline import RegistrationSettings, register

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct"
ACCURATE_MM, INACCURATE_MM = 2.0, 5.0
"""Rows of the confusion table: accurate below 2 mm mTRE, inaccurate beyond 5 mm, in between otherwise."""
GRADES = ("good", "uncertain", "failed")
SID_MM = 1000.0
CASSETTE_MM = (430.0, 350.0)
"""Smallest detector (rows, columns in mm): a 35 x 43 cm cassette, portrait."""
MAX_START_DEG, MAX_START_MM = 10.0, 20.0
"""Offset start: largest rotation (degrees) and translation (mm) from the truth."""
VIEW_SHIFT_MM = (20.0, 70.0)
"""No start: the true central ray passes this far (mm, uniform in the range) beside the CT centre."""
VIEW_TURN_DEG, VIEW_TILT_DEG, VIEW_DEPTH_MM = 10.0, 5.0, 30.0
"""Largest in-plane turn, out-of-plane tilt (degrees) and depth change (mm) of the true view."""
HIP_REGION_MM = (-130.0, 70.0)
"""Pelvic-Reference CTs are cut to these distances (mm along z) from their femoral heads, and to 130 mm (AP) and 120
mm (left-right) beyond them: a hip CT's field, without the spine, couch and wires."""


def load_cts() -> list[tuple[str, Volume, np.ndarray]]:
    """(name, CT in HU, mTRE target mask [k, j, i]) of the shared CTs, kinds interleaved so that a short run sees
    each kind: thigh crops, whole-pelvis CTs cut to both hips, the TotalSegmentator pelvis."""
    thighs = []
    for path in sorted((DATA / "ibsi_sts").glob("STS_*.nii.gz")):
        ct = read_ct(path)
        thighs.append((path.name.split(".")[0], ct, ct.array > 200.0))
    pelves = []
    for path in sorted((DATA / "pelvic_reference").glob("Pelvic-Ref-*.nii.gz")):
        ct = hip_region(read_ct(path))
        pelves.append((path.name.split(".")[0], ct, ct.array > 200.0))
    others = []
    folder = DATA / "totalsegmentator_example"
    if (folder / "example_ct.nii.gz").is_file():
        ct = read_ct(folder / "example_ct.nii.gz")
        femurs = [
            read_label_volume(folder / "masks_totalsegmentator_v1" / f"femur_{side}.nii.gz", like=ct).array > 0
            for side in ("left", "right")
        ]
        others.append(("TotalSeg_pelvis", ct, femurs[0] | femurs[1]))
    order = []
    for number in range(len(thighs)):
        order.append(thighs[number])
        if number < len(pelves):
            order.append(pelves[number])
        if number < len(others):
            order.append(others[number])
    return order


def hip_region(ct: Volume) -> Volume:
    """The CT cut to both femoral heads' region (:data:`HIP_REGION_MM`), on its own grid (identity direction)."""
    from bmdgan.ct.hips import find_hips

    heads = np.array([hip.head.centre_lps for hip in find_hips(ct)])
    low = heads.min(axis=0) - np.array([120.0, 130.0, -HIP_REGION_MM[0]])
    high = heads.max(axis=0) + np.array([120.0, 130.0, HIP_REGION_MM[1]])
    to_index = np.linalg.inv(ct.geometry.ijk_to_lps())
    corners = np.array([[*corner, 1.0] for corner in itertools.product(*zip(low, high))])
    ijk = (corners @ to_index.T)[:, :3]
    start = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
    stop = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, ct.shape_ijk)
    array = ct.array[start[2] : stop[2], start[1] : stop[1], start[0] : stop[0]]
    origin = (ct.geometry.ijk_to_lps() @ np.array([*start, 1.0]))[:3]
    geometry = type(ct.geometry)(ct.geometry.spacing_mm, tuple(float(v) for v in origin), ct.geometry.direction)
    return Volume(np.ascontiguousarray(array), geometry, unit="HU", source=ct.source)


def lps_points(mask: np.ndarray, ct: Volume) -> np.ndarray:
    k, j, i = np.nonzero(mask)
    return (np.c_[i, j, k, np.ones(len(i))] @ ct.geometry.ijk_to_lps().T)[:, :3]


def true_view(ct: Volume, bone: np.ndarray, pitch_mm: float, rng: np.random.Generator):
    """(true geometry, start geometry of `bmdgan register` without a pose): see the module docstring."""
    centre = volume_centre_lps(ct.shape_ijk, ct.geometry.ijk_to_lps())
    depth = SID_MM - DEFAULT_OBJECT_TO_DETECTOR_MM
    angle = rng.uniform(0.0, 2.0 * np.pi)
    shift = rng.uniform(*VIEW_SHIFT_MM) * np.array([np.cos(angle), np.sin(angle), 0.0])
    shift[2] = rng.uniform(-VIEW_DEPTH_MM, VIEW_DEPTH_MM)
    turn = np.array([*rng.uniform(-VIEW_TILT_DEG, VIEW_TILT_DEG, 2), rng.uniform(-VIEW_TURN_DEG, VIEW_TURN_DEG)])
    truth = camera_pose(np.concatenate([turn, shift]), ap_pose(centre, depth), bone.mean(axis=0)).numpy()
    # the detector: a cassette at least, larger where the bone would leave it; the central ray at its centre
    camera = bone @ truth[:3, :3].T + truth[:3, 3]
    on_detector = camera[:, :2] * (SID_MM / camera[:, 2:3])
    half = np.maximum(np.abs(on_detector).max(axis=0) + 15.0, np.array(CASSETTE_MM[::-1]) / 2.0)
    columns, rows = (np.ceil(2.0 * half / pitch_mm).astype(int) // 2) * 2
    principal = ((columns - 1) / 2.0, (rows - 1) / 2.0)
    geometry = ProjectionGeometry(SID_MM, int(columns), int(rows), pitch_mm, pitch_mm, principal, truth)
    return geometry, geometry.with_pose(ap_pose(centre, depth))


def our_simulator(ct: Volume, geometry: ProjectionGeometry, number: int, rng: np.random.Generator):
    """Our simulator with another site's acquisition: ``varied`` on even cases, ``site:<number>`` on odd ones."""
    acquisition = "varied" if number % 2 == 0 else f"site:{number}"
    protocol = parse_acquisition(acquisition)
    parameters = None if protocol is None else protocol.parameters_for(rng, rng.uniform(-20.0, 40.0))
    simulated = simulate_radiograph(ct, geometry, parameters, rng=rng)
    return simulated.pixels.astype(np.float32), {"acquisition": acquisition, **simulated.parameters.to_dict()}


def _attenuation_cm2_g(energies_kev: np.ndarray, photoelectric: float) -> np.ndarray:
    """Mass attenuation (cm2/g) as Compton-like plus photoelectric (E^-3) parts: this simulator's own law."""
    return 0.17 * (60.0 / energies_kev) ** 0.3 + photoelectric / energies_kev**3


def other_simulator(ct: Volume, geometry: ProjectionGeometry, rng: np.random.Generator):
    """A radiograph (float32, bone bright) made independently of :mod:`bmdgan.projection.simulator`, with its
    parameters: see the module docstring."""
    hu = ct.array.astype(np.float32)
    water = np.clip(1000.0 + np.minimum(hu, 100.0), 0.0, None)  # mg/cm3 water-like, HU 100 upwards: mineral
    mineral = np.clip(hu - 100.0, 0.0, None) * 1.1  # mg/cm3 mineral, 1.1 per HU above 100
    paths = Projector(np.stack([water, mineral]), ct.geometry.ijk_to_lps(), unit="mg/cm3").project(geometry)  # g/cm2
    kvp = rng.uniform(65.0, 90.0)
    aluminium_mm = rng.uniform(2.5, 4.0)
    energies = np.arange(20.0, kvp, 2.0)
    fluence = (kvp - energies) / energies * np.exp(-_attenuation_cm2_g(energies, 2.2e4) * 0.27 * aluminium_mm)
    weights = fluence * energies / np.sum(fluence * energies)  # energy-integrating detector
    mu_water, mu_mineral = _attenuation_cm2_g(energies, 3.2e3), _attenuation_cm2_g(energies, 4.5e4)
    primary = np.zeros(paths.shape[1:])
    for weight, a, b in zip(weights, mu_water, mu_mineral):
        primary += weight * np.exp(-a * paths[0] - b * paths[1])
    pitch = geometry.column_spacing_mm
    scatter_fraction, scatter_sigma_mm = rng.uniform(0.1, 0.8), rng.uniform(20.0, 60.0)
    signal = primary + scatter_fraction * gaussian_filter(primary, scatter_sigma_mm / pitch)
    heel = rng.uniform(0.0, 0.15)
    signal *= 1.0 + heel * np.linspace(-1.0, 1.0, signal.shape[0])[:, None]
    anatomy = primary < 0.9 * primary.max()  # attenuated by the patient
    if anatomy.sum() < 100:
        anatomy = np.ones_like(anatomy)
    # its own exposure control: the median anatomy pixel gets this many quanta per mm2
    quanta = rng.uniform(2e4, 1.5e5) * pitch**2 / float(np.median(signal[anatomy]))  # per pixel, unattenuated
    counts = rng.poisson(quanta * signal).astype(np.float64)
    sharp_mm, glare_mm, glare = rng.uniform(0.1, 0.3), rng.uniform(0.8, 2.0), rng.uniform(0.05, 0.25)
    counts = (1 - glare) * gaussian_filter(counts, sharp_mm / pitch) + glare * gaussian_filter(counts, glare_mm / pitch)
    counts += rng.normal(0.0, rng.uniform(1.0, 10.0), counts.shape)
    log = -np.log(np.maximum(counts, 1.0) / quanta)
    fine_gain, coarse_gain = rng.uniform(0.0, 1.5), rng.uniform(0.0, 1.0)
    coarse_mm = rng.uniform(8.0, 15.0)
    log = (
        log
        + fine_gain * (log - gaussian_filter(log, 1.5 / pitch))
        + coarse_gain * (log - gaussian_filter(log, coarse_mm / pitch))
    )
    compression = rng.uniform(0.2, 0.8)
    log -= compression * gaussian_filter(log, 40.0 / pitch)
    low, high = np.percentile(log[anatomy], [rng.uniform(0.5, 3.0), rng.uniform(97.0, 99.8)])
    shown = np.clip((log - low) / max(high - low, 1e-6), 0.0, 1.0)
    curve = str(rng.choice(["gamma", "s-curve", "equalise"]))
    if curve == "gamma":
        shown = shown ** rng.uniform(0.5, 1.6)
    elif curve == "s-curve":
        slope, middle = rng.uniform(4.0, 10.0), rng.uniform(0.4, 0.6)
        ends = 1.0 / (1.0 + np.exp(-slope * (np.array([0.0, 1.0]) - middle)))
        shown = (1.0 / (1.0 + np.exp(-slope * (shown - middle))) - ends[0]) / (ends[1] - ends[0])
    else:
        ranks = np.searchsorted(np.sort(shown.ravel()), shown) / shown.size
        blend = rng.uniform(0.3, 0.8)
        shown = blend * ranks + (1 - blend) * shown
    bits = int(rng.choice([8, 10]))
    pixels = np.round(shown * (2**bits - 1)).astype(np.float32)
    parameters = {
        "kvp": kvp,
        "aluminium_mm": aluminium_mm,
        "scatter_fraction": scatter_fraction,
        "scatter_sigma_mm": scatter_sigma_mm,
        "heel": heel,
        "quanta_per_pixel": quanta,
        "blur_mm": sharp_mm,
        "glare_mm": glare_mm,
        "glare": glare,
        "fine_gain": fine_gain,
        "coarse_gain": coarse_gain,
        "coarse_mm": coarse_mm,
        "range_compression": compression,
        "tone_curve": curve,
        "bits": bits,
    }
    return pixels, parameters


def random_offset(rng: np.random.Generator) -> np.ndarray:
    """Pose parameters of a rotation by up to :data:`MAX_START_DEG` about a random axis and a translation of up to
    :data:`MAX_START_MM` in a random direction (degrees, mm)."""
    axis = rng.normal(size=3)
    angles = Rotation.from_rotvec(axis / np.linalg.norm(axis) * np.deg2rad(rng.uniform(0.0, MAX_START_DEG)))
    direction = rng.normal(size=3)
    return np.concatenate(
        [angles.as_euler("xyz", degrees=True), direction / np.linalg.norm(direction) * rng.uniform(0.0, MAX_START_MM)]
    )


def band(error_mm: float) -> str:
    if error_mm < ACCURATE_MM:
        return "accurate"
    return "inaccurate" if error_mm > INACCURATE_MM else "in between"


def summarise(rows: list[dict]) -> dict:
    """Success rate, median error and the confusion table (band -> grade -> count) of some cases."""
    errors = [row["error_mm"] for row in rows]
    table = {name: dict.fromkeys(GRADES, 0) for name in ("accurate", "in between", "inaccurate")}
    for row in rows:
        table[band(row["error_mm"])][row["grade"]] += 1
    accurate = sum(table["accurate"].values())
    return {
        "registrations": len(rows),
        "success_rate": float(np.mean([e < ACCURATE_MM for e in errors])) if rows else None,
        "median_error_mm": float(statistics.median(errors)) if rows else None,
        "confusion": table,
        "accurate_called_failed": table["accurate"]["failed"] / accurate if accurate else 0.0,
        "beyond_5mm_called_good": table["inaccurate"]["good"],
    }


def print_summary(title: str, summary: dict) -> None:
    if not summary["registrations"]:
        return
    print(
        f"\n{title}: {summary['registrations']} registrations, success (< {ACCURATE_MM:g} mm) "
        f"{100 * summary['success_rate']:.0f} %, median error {summary['median_error_mm']:.2f} mm"
    )
    print(f"  {'':12s} {'good':>6s} {'uncertain':>10s} {'failed':>7s}")
    for name, counts in summary["confusion"].items():
        print(f"  {name:12s} {counts['good']:6d} {counts['uncertain']:10d} {counts['failed']:7d}")
    print(
        f"  accurate called failed: {100 * summary['accurate_called_failed']:.0f} % (must be <= 5 %); beyond "
        f"{INACCURATE_MM:g} mm called good: {summary['beyond_5mm_called_good']} (must be 0)"
    )


def picture(rows: list[dict], path: Path) -> None:
    """Error (mm, log scale) against the final patch GC per configuration, coloured by grade."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bmdgan.registration.quality import FAILED_GC, GOOD_GC

    colours = {"good": "tab:green", "uncertain": "tab:orange", "failed": "tab:red"}
    configurations = sorted({row["configuration"] for row in rows})
    figure, axes = plt.subplots(1, len(configurations), figsize=(5.5 * len(configurations), 4.2), squeeze=False)
    for axis, configuration in zip(axes[0], configurations):
        for grade in GRADES:
            chosen = [r for r in rows if r["configuration"] == configuration and r["grade"] == grade]
            markers = {"offset": "o", "no start": "^"}
            for start, marker in markers.items():
                picked = [r for r in chosen if r["start"] == start]
                axis.scatter(
                    [r["gc"] for r in picked],
                    [max(r["error_mm"], 0.05) for r in picked],
                    c=colours[grade],
                    marker=marker,
                    label=f"{grade}, {start}" if picked else None,
                )
        axis.set_yscale("log")
        for value in (ACCURATE_MM, INACCURATE_MM):
            axis.axhline(value, color="grey", lw=0.8, ls="--")
        for value in (FAILED_GC, GOOD_GC):
            axis.axvline(value, color="grey", lw=0.8, ls=":")
        axis.set_xlabel("final patch gradient correlation")
        axis.set_ylabel("mTRE (mm)")
        axis.set_title(f"{configuration} radiographs")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for quality_check.json and the picture")
    parser.add_argument("--cases", type=int, default=12, help="most radiographs (default %(default)s)")
    parser.add_argument(
        "--max-minutes", type=float, default=14.0, help="start no new case after this wall time (default %(default)s)"
    )
    parser.add_argument("--configurations", nargs="+", default=["site", "other"], choices=["site", "other"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if not DATA.is_dir():
        print(f"shared CTs not found in {DATA}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    cts = load_cts()
    rows, per_case = [], []
    print(f"{'case':>4s} {'configuration':13s} {'CT':15s} {'start':8s} {'from':>7s} {'mTRE':>7s} {'GC':>6s} grade")
    for number in range(args.cases):
        elapsed = time.perf_counter() - began
        if per_case and elapsed + statistics.median(per_case) > 60.0 * args.max_minutes:
            break
        case_began = time.perf_counter()
        configuration = args.configurations[number % len(args.configurations)]
        name, ct, target = cts[(number // len(args.configurations)) % len(cts)]
        rng = np.random.default_rng([args.seed, number])
        bone = lps_points(ct.array > 200.0, ct)
        points = lps_points(target, ct)
        pitch = 0.5 if configuration == "site" else 0.6
        truth, default_start = true_view(ct, bone, pitch, rng)
        if configuration == "site":
            pixels, parameters = our_simulator(ct, truth, number, rng)
        else:
            pixels, parameters = other_simulator(ct, truth, rng)
        offset = truth.with_pose(camera_pose(random_offset(rng), truth.camera_from_lps, bone.mean(axis=0)).numpy())
        for start, geometry, search in (("offset", offset, False), ("no start", default_start, True)):
            start_error = mean_target_error_mm(points, truth.camera_from_lps, geometry.camera_from_lps)
            settings = RegistrationSettings(global_search=search, seed=number)
            result = register(pixels, geometry, ct, settings=settings, start="given" if not search else "default")
            error = mean_target_error_mm(points, truth.camera_from_lps, result.geometry.camera_from_lps)
            quality = result.quality
            chosen = result.start_search["chosen"] if result.start_search else "given"
            row = {
                "case": number,
                "configuration": configuration,
                "ct": name,
                "start": start,
                "start_error_mm": start_error,
                "error_mm": error,
                "gc": quality.checks["gradient_correlation"],
                "grade": quality.flag,
                "cause": quality.cause,
                "reason": quality.reason,
                "start_used": chosen,
                "seconds": result.seconds,
                "detector_pitch_mm": pitch,
                "simulation": parameters,
                "hips_found": len(result.start_search["hips"]) if result.start_search else None,
            }
            rows.append(row)
            print(
                f"{number:4d} {configuration:13s} {name:15s} {start:8s} {start_error:7.1f} {error:7.2f} "
                f"{row['gc']:6.3f} {quality.flag}{', ' + quality.cause if quality.cause else ''}"
                f"{' (start: ' + chosen + ')' if search else ''}",
                flush=True,
            )
        per_case.append(time.perf_counter() - case_began)
    summaries = {}
    for configuration in args.configurations:
        chosen = [row for row in rows if row["configuration"] == configuration]
        summaries[configuration] = {
            "all": summarise(chosen),
            "offset": summarise([row for row in chosen if row["start"] == "offset"]),
            "no start": summarise([row for row in chosen if row["start"] == "no start"]),
        }
        for start in ("offset", "no start"):
            print_summary(f"{configuration} radiographs, {start}", summaries[configuration][start])
        print_summary(f"{configuration} radiographs, both starts", summaries[configuration]["all"])
    summaries["all"] = summarise(rows)
    print_summary("all radiographs and starts", summaries["all"])
    minutes = (time.perf_counter() - began) / 60.0
    print(f"\n{len(per_case)} radiographs in {minutes:.1f} min on {torch.get_num_threads()} thread(s)")
    record = {
        "command": " ".join(sys.argv),
        "minutes": minutes,
        "threads": torch.get_num_threads(),
        "summaries": summaries,
        "cases": rows,
    }
    (args.out / "quality_check.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    if rows:
        picture(rows, args.out / "registration_quality.png")
    print(f"wrote {args.out / 'quality_check.json'} and {args.out / 'registration_quality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
