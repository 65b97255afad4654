"""Benchmark of the DRR projector (``bmdgan.projection``): speed, peak memory and accuracy.

Renders a 256 x 512 (columns x rows) AP DRR of a synthetic pelvis CT of 256x256x150 and of 512x512x300
voxels, single channel and masked (5 labels), with

* ``bmdgan``: :class:`bmdgan.projection.Projector` (Joseph slab method, chunked, grid_sample 2D);
* ``reference``: a straightforward non-chunked trilinear ray marcher (grid_sample 3D, half-voxel step),
  the named baseline; masked = one render per masked volume;
* ``scipy``: the same marcher with ``scipy.ndimage.map_coordinates`` (order 1), single channel;
* DiffDRR and nanodrr, only if importable (they are not installed in the project's environment; the same
  volume and detector size in their own AP convention: timing comparison only).

Every measurement runs in a fresh subprocess: median wall and CPU time of ``--repeats`` renders after one
warm-up (``--slow-repeats`` renders without warm-up for scipy and the masked reference), and the peak
resident memory added by rendering (Linux ``VmHWM`` reset through ``/proc/self/clear_refs``; otherwise the
process peak). An accuracy table compares each projector with the
exact line integrals of a uniform sphere. Usage::

    python benchmarks/bench_drr.py [--repeats 5] [--sizes small large] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"small": ((150, 256, 256), (1.5, 1.5, 2.0)), "large": ((300, 512, 512), (0.8, 0.8, 1.0))}
"""CT grids (K, J, I) and spacings (i, j, k) mm: both about 40 x 40 x 30 cm."""
COLUMNS, ROWS = 256, 512
ENERGY_KEV = 50.0
LABELS = 5


# ---------------------------------------------------------------------------------------------- helpers
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _geometry(volume):
    from bmdgan.projection import default_ap_geometry

    probe = default_ap_geometry(volume, pixel_spacing_mm=1.0)
    pitch = max(probe.detector_columns / COLUMNS, probe.detector_rows / ROWS)
    return default_ap_geometry(volume, pixel_spacing_mm=pitch, columns=COLUMNS, rows=ROWS)


def prepare(size: str, folder: Path) -> Path:
    """Write the synthetic CT (attenuation 1/mm), its labels and geometry for the child processes."""
    import numpy as np

    from bmdgan.io import write_volume
    from bmdgan.projection.attenuation import hu_to_attenuation
    from bmdgan.projection.phantoms import synthetic_body_ct

    case = folder / size
    case.mkdir(parents=True, exist_ok=True)
    shape, spacing = SIZES[size]
    ct, labels = synthetic_body_ct(shape, spacing, seed=0)
    np.save(case / "mu.npy", hu_to_attenuation(ct.array, ENERGY_KEV))
    np.save(case / "labels.npy", labels.astype(np.uint8))
    np.save(case / "ijk_to_lps.npy", ct.geometry.ijk_to_lps())
    _geometry(ct).save(case / "geometry.json")
    if _importable("diffdrr") or _importable("nanodrr"):
        write_volume(ct, case / "ct.nii.gz")
        from bmdgan.io import Volume

        write_volume(Volume(labels.astype(np.int16), ct.geometry, unit="label"), case / "labels.nii.gz")
    return case


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ---------------------------------------------------------------------------------------------- child
def _renderer(method: str, case: Path, masked: bool):
    """A zero-argument render function for a method (inputs loaded here, outside the timing)."""
    import numpy as np
    import torch

    from bmdgan.projection import ProjectionGeometry, Projector

    geometry = ProjectionGeometry.load(case / "geometry.json")
    mu = np.load(case / "mu.npy")
    ijk_to_lps = np.load(case / "ijk_to_lps.npy")
    labels = np.load(case / "labels.npy") if masked else None
    if method == "bmdgan":
        masks = np.stack([labels == n for n in range(1, LABELS + 1)]) if masked else None
        projector = Projector(mu, ijk_to_lps, unit="1/mm", masks=masks)

        def render():
            with torch.no_grad():
                return projector.render(geometry.camera_from_lps, geometry)
        return render
    if method == "reference":
        from bmdgan.projection.reference import reference_project

        if not masked:
            return lambda: reference_project(mu, ijk_to_lps, geometry, unit="1/mm")
        return lambda: [reference_project(mu * (labels == n), ijk_to_lps, geometry, unit="1/mm")
                        for n in range(1, LABELS + 1)]
    if method == "scipy":
        from bmdgan.projection.reference import scipy_reference_project

        return lambda: scipy_reference_project(mu, ijk_to_lps, geometry, unit="1/mm")
    if method == "nanodrr":
        from nanodrr.camera import make_k_inv, make_rt_inv
        from nanodrr.data import Subject
        from nanodrr.drr import render as nanodrr_render

        subject = Subject.from_filepath(str(case / "ct.nii.gz"), str(case / "labels.nii.gz") if masked else None)
        sdd = geometry.source_to_detector_mm
        k_inv = make_k_inv(sdd, geometry.column_spacing_mm, geometry.row_spacing_mm, 0.0, 0.0, ROWS, COLUMNS)
        rt_inv = make_rt_inv(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[0.0, sdd - 200.0, 0.0]]),
                             orientation="AP", isocenter=subject.isocenter)
        sdd_tensor = torch.tensor([sdd])

        def render():
            with torch.no_grad():
                return nanodrr_render(subject, k_inv, rt_inv, sdd_tensor, ROWS, COLUMNS)
        return render
    if method == "diffdrr":
        from diffdrr.data import read
        from diffdrr.drr import DRR
        from diffdrr.pose import convert

        sdd = geometry.source_to_detector_mm
        drr = DRR(read(str(case / "ct.nii.gz")), sdd=sdd, height=ROWS, width=COLUMNS,
                  delx=geometry.column_spacing_mm, dely=geometry.row_spacing_mm, renderer="trilinear")
        pose = convert(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([[0.0, sdd - 200.0, 0.0]]),
                       parameterization="euler_angles", convention="ZXY")

        def render():
            with torch.no_grad():
                return drr(pose)
        return render
    raise ValueError(method)


def child(method: str, case: Path, masked: bool, repeats: int, threads: int, warm_up: bool) -> dict:
    import torch

    torch.set_num_threads(threads)
    render = _renderer(method, case, masked)
    if warm_up:
        render()
    rss_before = _status_kib("VmRSS")
    precise = _reset_peak()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        render()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    peak = _status_kib("VmHWM")
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "repeats": repeats,
            "peak_extra_mib": None if peak is None or rss_before is None else (peak - rss_before) / 1024,
            "peak_process_mib": None if peak is None else peak / 1024, "peak_reset": precise}


# ---------------------------------------------------------------------------------------------- accuracy
def accuracy_table() -> list[tuple[str, float, float]]:
    """(method, centre error %, mean error %) for a uniform 30 mm sphere (1 mm voxels), cone beam."""
    import numpy as np

    from bmdgan.projection import default_ap_geometry, project_volume
    from bmdgan.projection.phantoms import sphere_chords_mm, sphere_phantom
    from bmdgan.projection.reference import reference_project, scipy_reference_project

    volume, centre = sphere_phantom((80, 80, 80), (1.0, 1.0, 1.0), radius_mm=30.0, value=1000.0)
    geometry = default_ap_geometry(volume, pixel_spacing_mm=0.5)
    analytic = sphere_chords_mm(geometry, centre, 30.0) * 1000.0 * 1e-4
    column, row = (int(round(v)) for v in geometry.project_points(centre))
    footprint = analytic > 0
    matrix = volume.geometry.ijk_to_lps()
    images = {"bmdgan (Joseph, 1 sample per plane)": project_volume(volume, geometry).image[0],
              "reference trilinear, step 0.5 voxel": reference_project(volume.array, matrix, geometry)[0],
              "reference trilinear, step 1 voxel": reference_project(volume.array, matrix, geometry, step_mm=1.0)[0],
              "scipy map_coordinates, step 0.5 voxel": scipy_reference_project(volume.array, matrix, geometry)[0]}
    rows = []
    for name, image in images.items():
        rows.append((name, 100 * abs(image[row, column] / analytic[row, column] - 1),
                     100 * abs(image[footprint].mean() / analytic[footprint].mean() - 1)))
    return rows


# ---------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--slow-repeats", type=int, default=1,
                        help="repeats (no warm-up) of the slow baselines: scipy and the masked reference")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "CASE", "MASKED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, case, masked = args.child
        slow = method == "scipy" or (method == "reference" and masked == "1")
        print(json.dumps(child(method, Path(case), masked == "1", args.repeats, args.threads, warm_up=not slow)))
        return 0

    import torch

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(f"detector {COLUMNS} columns x {ROWS} rows, AP cone beam, attenuation at {ENERGY_KEV:g} keV\n")
    methods = [("bmdgan", False), ("bmdgan", True), ("reference", False), ("reference", True), ("scipy", False)]
    methods += [(name, masked) for name in ("diffdrr", "nanodrr") if _importable(name) for masked in (False, True)]
    absent = [name for name in ("diffdrr", "nanodrr") if not _importable(name)]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_drr_") as folder:
        for size in args.sizes:
            case = prepare(size, Path(folder))
            for method, masked in methods:
                if method == "diffdrr" and masked:
                    continue  # single-class renderer here
                slow = method == "scipy" or (method == "reference" and masked)
                repeats = args.slow_repeats if slow else args.repeats
                command = [sys.executable, __file__, "--repeats", str(repeats), "--threads", str(args.threads),
                           "--child", method, str(case), "1" if masked else "0"]
                done = subprocess.run(command, capture_output=True, text=True)
                key = (size, method, masked)
                if done.returncode != 0:
                    results[key] = {"error": done.stderr.strip().splitlines()[-1][:160] if done.stderr else "failed"}
                else:
                    results[key] = json.loads(done.stdout.strip().splitlines()[-1])
                row = results[key]
                label = f"{size:5s} {'masked x5' if masked else 'single   '} {method:9s}"
                if "error" in row:
                    print(f"{label} failed: {row['error']}")
                else:
                    extra = "n/a" if row["peak_extra_mib"] is None else f"{row['peak_extra_mib']:8.0f}"
                    print(f"{label} wall {row['wall_s']:8.3f} s  cpu {row['cpu_s']:8.3f} s  "
                          f"peak +{extra} MiB (process {row['peak_process_mib']:.0f} MiB)")
    print("\nratios (baseline = reference trilinear marcher, same case; > 1 means bmdgan is faster / leaner):")
    for size in args.sizes:
        for masked in (False, True):
            ours, baseline = results.get((size, "bmdgan", masked)), results.get((size, "reference", masked))
            if not ours or not baseline or "error" in ours or "error" in baseline:
                continue
            memory = ""
            if ours["peak_extra_mib"] and baseline["peak_extra_mib"]:
                memory = f", memory x{baseline['peak_extra_mib'] / max(ours['peak_extra_mib'], 1.0):.1f}"
            kind = "masked x5" if masked else "single   "
            print(f"  {size:5s} {kind}: speed x{baseline['wall_s'] / ours['wall_s']:.1f}"
                  f" (cpu x{baseline['cpu_s'] / ours['cpu_s']:.1f}){memory}")
            for other in ("scipy", "diffdrr", "nanodrr"):
                row = results.get((size, other, masked))
                if row and "error" not in row:
                    print(f"      vs {other}: speed x{row['wall_s'] / ours['wall_s']:.1f}")
    if absent:
        print(f"  ({', '.join(absent)} not importable here: install them in a separate environment to compare)")
    print("\naccuracy on a uniform 30 mm sphere, 1 mm voxels, cone beam (error vs exact line integrals):")
    for name, centre_error, mean_error in accuracy_table():
        print(f"  {name:40s} centre {centre_error:6.3f} %   mean over the sphere {mean_error:6.3f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
