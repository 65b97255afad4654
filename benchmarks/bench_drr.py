"""Equal-work benchmark of the DRR projector (``bmdgan.projection``) against DiffDRR, nanodrr and bare grid_sample.

Every method casts the same rays (the same source, detector pixels and CT pose: the rays are computed once
from the bmdgan geometry and handed to each renderer in its own frame) through the same synthetic pelvis CT
(linear attenuation, 1/mm) and takes the same number of samples N on each ray: N = the number of voxel
planes our Joseph projector crosses per ray (one bilinear sample per plane of the axis the ray runs along,
the CT's j axis for an AP view). The detector lies inside the projection of the CT's far face, so every ray
crosses the whole CT (100 % of the rays hit it: our projector skips missing rays, the peers do not, so a
geometry with misses would flatter us). The images are checked to agree (correlation with ours, ratio of
means) before their timings are compared.

Methods (single channel, forward only, no gradients):

* ``bmdgan``: :class:`bmdgan.projection.Projector` (Joseph slab method: chunked bilinear ``grid_sample`` 2D);
* ``grid_sample_2d``: the sampling kernel alone, one bare ``torch.nn.functional.grid_sample`` 2D call over
  all planes at the same bilinear sample points as ours, and the sum along each ray; the points and the
  plane-first volume are prepared before the timing: the floor of our algorithm on this torch;
* ``grid_sample_3d``: the same with one bare trilinear ``grid_sample`` 3D call at the same N points per ray
  (what the peers do: 8 taps per sample instead of 4), points prepared before the timing;
* ``diffdrr``: DiffDRR's ``trilinear`` renderer (``DRR.render``, ``n_points`` = N);
* ``nanodrr``: nanodrr's ``render`` (torch backend, ``n_samples`` = N).

Each (method, thread count) runs in a fresh subprocess: one warm-up render (its image is kept for the
agreement check), then the median wall and CPU time of ``--repeats`` renders, and the peak resident memory
added by rendering (Linux ``VmHWM`` reset through ``/proc/self/clear_refs``). It runs at one thread and
at torch's default thread count (``--threads``; ``default+passive`` runs with ``OMP_WAIT_POLICY=PASSIVE``).
``--competing-load`` adds a test of our projector alternating between 1 and 2 threads in one process
(OpenMP's default spinning and passive waiting), without and with a busy-loop process keeping one core
busy: which thread count never loses to one thread. The load average is printed before and after each
table: the machine may be shared, so compare ratios from the same run (CPU-time ratios are the least
sensitive to other work). An accuracy table compares our projector with the exact line integrals of a
uniform sphere.

DiffDRR and nanodrr live in their own environment (they pull a second VTK and upgrade torch unless it is
pinned); the engine is imported from the source tree. Usage::

    PYTHONPATH=BMDGAN .venv-peers/bin/python benchmarks/bench_drr.py [--repeats 5] [--sizes small]
        [--threads 1 default default+passive] [--competing-load]
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
"""CT grids (K, J, I) and voxel spacings (i, j, k) in mm: both about 38 x 38 x 30 cm (L-R x A-P x S-I)."""
COLUMNS, ROWS = 320, 240
"""Detector pixels: 76,800 rays, pitch chosen so that all of them cross the whole CT."""
INSET = 0.98
"""Fraction of the projection of the CT's far face that the detector covers (every ray hits the CT)."""
ENERGY_KEV = 50.0
METHODS = ("bmdgan", "grid_sample_2d", "grid_sample_3d", "diffdrr", "nanodrr")
PEERS = ("diffdrr", "nanodrr")
MARCH_AXIS = 1
"""Index axis (j, anterior-posterior) that every ray of the AP view crosses most steeply."""


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


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"


def all_hit_geometry(volume):
    """AP cone-beam geometry (``COLUMNS`` x ``ROWS``) whose detector lies inside the projection of the CT
    box's far face: every ray enters through the near face and leaves through the far one."""
    import numpy as np

    from bmdgan.projection import default_ap_geometry
    from bmdgan.projection.geometry import volume_corners_lps

    probe = default_ap_geometry(volume, pixel_spacing_mm=1.0, columns=COLUMNS, rows=ROWS)
    corners = probe.to_camera(volume_corners_lps(volume.shape_ijk, volume.geometry.ijk_to_lps()))
    far = corners[np.isclose(corners[:, 2], corners[:, 2].max())]
    on_detector = far[:, :2] * (probe.source_to_detector_mm / far[:, 2:3])
    half_x, half_y = np.abs(on_detector).min(axis=0)
    pitch_mm = INSET * min(2.0 * half_x / COLUMNS, 2.0 * half_y / ROWS)
    return default_ap_geometry(volume, pixel_spacing_mm=pitch_mm, columns=COLUMNS, rows=ROWS)


def ray_census(mu_shape_kji, ijk_to_lps, geometry) -> dict:
    """Fraction of rays that hit the CT, the axis they march along and the planes (samples) per ray."""
    import numpy as np
    import torch

    from bmdgan.projection.rays import box_intersection

    origins, directions = _rays_ijk(ijk_to_lps, geometry)
    shape_ijk = mu_shape_kji[::-1]
    low = torch.full((3,), -0.5)
    high = torch.as_tensor(shape_ijk, dtype=torch.float32) - 0.5
    entry, leave = box_intersection(origins, directions, low, high)
    hit = torch.minimum(leave, torch.ones_like(leave)) > torch.clamp(entry, min=0.0)
    full_depth = hit & (entry >= 0.0) & (leave <= 1.0)
    axes = directions.abs().argmax(dim=-1)
    return {
        "rays": int(hit.numel()),
        "hit_fraction": float(hit.float().mean()),
        "full_depth_fraction": float(full_depth.float().mean()),
        "march_axes": sorted({int(a) for a in axes[hit]}),
        "samples_per_ray": int(np.asarray(shape_ijk)[MARCH_AXIS]),
    }


def _rays_ijk(ijk_to_lps, geometry):
    """Source (origins) and source-to-pixel vectors (directions) of every detector ray in voxel indices."""
    import numpy as np
    import torch

    from bmdgan.projection.rays import camera_rays

    origins_cam, directions_cam = camera_rays(geometry, torch.float64, "cpu")
    ijk_from_camera = torch.as_tensor(np.linalg.inv(ijk_to_lps) @ geometry.lps_from_camera)
    origins = origins_cam @ ijk_from_camera[:3, :3].T + ijk_from_camera[:3, 3]
    directions = directions_cam @ ijk_from_camera[:3, :3].T
    return origins.float(), directions.float()


def prepare(size: str, folder: Path) -> tuple[Path, dict]:
    """Write the synthetic CT (attenuation, 1/mm) and the geometry for the child processes."""
    import numpy as np

    from bmdgan.projection.attenuation import hu_to_attenuation
    from bmdgan.projection.phantoms import synthetic_body_ct

    case = folder / size
    case.mkdir(parents=True, exist_ok=True)
    shape, spacing = SIZES[size]
    ct, _ = synthetic_body_ct(shape, spacing, seed=0)
    mu = hu_to_attenuation(ct.array, ENERGY_KEV)
    ijk_to_lps = ct.geometry.ijk_to_lps()
    geometry = all_hit_geometry(ct)
    np.save(case / "mu.npy", mu)
    np.save(case / "ijk_to_lps.npy", ijk_to_lps)
    geometry.save(case / "geometry.json")
    return case, ray_census(mu.shape, ijk_to_lps, geometry)


# ---------------------------------------------------------------------------------------------- child
def _renderer(method: str, case: Path):
    """A zero-argument render function returning the (rows, cols) radiological path (dimensionless);
    inputs are loaded and laid out here, outside the timing."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from bmdgan.projection import ProjectionGeometry, Projector
    from bmdgan.projection.rays import camera_rays

    geometry = ProjectionGeometry.load(case / "geometry.json")
    mu = np.load(case / "mu.npy")
    ijk_to_lps = np.load(case / "ijk_to_lps.npy")
    k_size, j_size, i_size = mu.shape
    samples = j_size
    rows, cols = geometry.shape
    if method == "bmdgan":
        projector = Projector(mu, ijk_to_lps, unit="1/mm")

        def render():
            with torch.no_grad():
                return projector.render(geometry.camera_from_lps, geometry)[0]

        return render

    origins, directions = _rays_ijk(ijk_to_lps, geometry)
    if method in ("grid_sample_2d", "grid_sample_3d"):
        # the sampling kernel alone: the points (our Joseph points, where each ray crosses each j plane) and
        # the plane-first layout are computed here, before the timing; the render is grid_sample + the sum
        _, directions_cam = camera_rays(geometry, torch.float32, "cpu")
        d_axis = directions[:, MARCH_AXIS]
        step_mm = torch.linalg.vector_norm(directions_cam, dim=-1) / d_axis.abs()  # path per plane, mm
        t = (torch.arange(samples, dtype=torch.float32).unsqueeze(1) - origins[:, MARCH_AXIS]) / d_axis
        points = origins + t.unsqueeze(-1) * directions  # (J, rays, 3) index
        if method == "grid_sample_2d":
            slabs = torch.as_tensor(mu).permute(1, 0, 2).contiguous().unsqueeze(1)  # (J, 1, K, I)
            scale = torch.tensor([2.0 / (i_size - 1), 2.0 / (k_size - 1)])
            grid = (points[..., (0, 2)] * scale - 1.0).unsqueeze(1).contiguous()  # (J, 1, rays, 2)

            def render():
                with torch.no_grad():
                    sampled = F.grid_sample(
                        slabs, grid, mode="bilinear", padding_mode="zeros", align_corners=True
                    )  # (J, 1, 1, rays)
                    return (sampled.sum(dim=0)[0, 0] * step_mm).reshape(rows, cols)

            return render
        volume = torch.as_tensor(mu)[None, None]  # (1, 1, K, J, I)
        scale = torch.tensor([2.0 / (i_size - 1), 2.0 / (j_size - 1), 2.0 / (k_size - 1)])
        grid = (points * scale - 1.0)[None, :, None].contiguous()  # (1, J, 1, rays, 3)

        def render():
            with torch.no_grad():
                sampled = F.grid_sample(
                    volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True
                )  # (1, 1, J, 1, rays)
                return (sampled[0, 0, :, 0].sum(dim=0) * step_mm).reshape(rows, cols)

        return render

    if method == "diffdrr":
        from diffdrr.data import read
        from diffdrr.drr import DRR
        from torchio import ScalarImage

        image = ScalarImage(tensor=torch.as_tensor(mu).permute(2, 1, 0)[None].contiguous(), affine=ijk_to_lps)
        drr = DRR(
            read(image),
            sdd=geometry.source_to_detector_mm,
            height=rows,
            width=cols,
            delx=geometry.column_spacing_mm,
            dely=geometry.row_spacing_mm,
            renderer="trilinear",
        )
        drr.density = torch.as_tensor(mu).permute(2, 1, 0).contiguous()  # (I, J, K) in 1/mm, not rescaled
        world_from_ijk = drr._affine[0]
        source = (origins[:1] @ world_from_ijk[:3, :3].T + world_from_ijk[:3, 3])[None]  # (1, 1, 3) mm
        target = ((origins + directions) @ world_from_ijk[:3, :3].T + world_from_ijk[:3, 3])[None]

        def render():
            with torch.no_grad():
                return drr.render(drr.density, source, target, n_points=samples).reshape(rows, cols)

        return render

    if method == "nanodrr":
        from nanodrr.data import Subject
        from nanodrr.drr import render as nanodrr_render

        image = torch.as_tensor(mu)[None, None].contiguous()  # (1, 1, D=K, H=J, W=I)
        voxel_to_world = torch.as_tensor(ijk_to_lps, dtype=torch.float32)
        subject = Subject(
            image,
            torch.zeros_like(image),
            voxel_to_world,
            torch.as_tensor(np.linalg.inv(ijk_to_lps), dtype=torch.float32),
            Subject._make_voxel_to_grid(image.shape),
            voxel_to_world[:3, 3],
            convert_to_mu=False,
        )
        _, pixels = camera_rays(geometry, torch.float32, "cpu")  # pixel centres, camera mm
        rt_inv = torch.as_tensor(geometry.lps_from_camera, dtype=torch.float32)[None]
        k_inv = torch.as_tensor(np.linalg.inv(geometry.intrinsic_matrix()), dtype=torch.float32)[None]
        sdd = torch.tensor([geometry.source_to_detector_mm])
        source, target = torch.zeros(1, 1, 3), pixels[None]

        def render():
            with torch.no_grad():
                return nanodrr_render(
                    subject, k_inv, rt_inv, sdd, rows, cols, n_samples=samples, src=source, tgt=target, backend="torch"
                )[0, 0]

        return render
    raise ValueError(method)


PASSIVE_SUFFIX = "+passive"
"""Thread-spec suffix (``default+passive``, ``2+passive``): the child runs with ``OMP_WAIT_POLICY=PASSIVE``
(OpenMP threads sleep at once instead of spinning when they wait; read when torch loads, so per process)."""


def child(method: str, case: Path, repeats: int, threads: str, image_path: Path | None) -> dict:
    import numpy as np
    import torch

    if threads != "default":
        torch.set_num_threads(int(threads))
    render = _renderer(method, case)
    image = render()
    if image_path is not None:
        np.save(image_path, image.float().cpu().numpy())
    rss_before = _status_kib("VmRSS")
    precise = _reset_peak()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        render()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    peak = _status_kib("VmHWM")
    return {
        "wall_s": statistics.median(walls),
        "min_wall_s": min(walls),
        "cpu_s": statistics.median(cpus),
        "repeats": repeats,
        "walls_s": walls,
        "threads": torch.get_num_threads(),
        "peak_extra_mib": None if peak is None or rss_before is None or not precise else (peak - rss_before) / 1024,
    }


def alternating_child(case: Path, repeats: int, counts: tuple[int, ...] = (1, 2)) -> dict:
    """Our projector rendering at each thread count in turn, ``repeats`` rounds in one process: the counts
    share the same background load, so their ratio holds up better on a busy machine than separate runs."""
    import torch

    render = _renderer("bmdgan", case)
    walls = {n: [] for n in counts}
    for n in counts:
        torch.set_num_threads(n)
        render()  # warm-up at each count
    for _ in range(repeats):
        for n in counts:
            torch.set_num_threads(n)
            start = time.perf_counter()
            render()
            walls[n].append(time.perf_counter() - start)
    ratios = [walls[counts[-1]][r] / walls[counts[0]][r] for r in range(repeats)]
    return {
        "walls_s": {str(n): w for n, w in walls.items()},
        "wall_s": {str(n): statistics.median(w) for n, w in walls.items()},
        "paired_ratio": statistics.median(ratios),
    }


def run_child(method: str, case: Path, repeats: int, threads: str, image_path: Path | None = None) -> dict:
    """One measurement in a fresh interpreter (nothing cached from earlier methods); ``threads`` is a
    count, ``default`` or ``alternate``, optionally with :data:`PASSIVE_SUFFIX`."""
    env = dict(os.environ)
    if threads.endswith(PASSIVE_SUFFIX):
        threads = threads[: -len(PASSIVE_SUFFIX)]
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    command = [
        sys.executable,
        __file__,
        "--repeats",
        str(repeats),
        "--child",
        method,
        str(case),
        threads,
        str(image_path or ""),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {"error": lines[-1][:200] if lines else f"exit code {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- agreement
def agreement(images: dict[str, Path]) -> list[tuple[str, float, float, float]]:
    """(method, correlation with ours, ratio of mean values to ours, 99th percentile of |difference| / ours'
    mean) of the images rendered by each method."""
    import numpy as np

    ours = np.load(images["bmdgan"]).ravel().astype(np.float64)
    rows = []
    for method, path in images.items():
        if method == "bmdgan" or not path.is_file():
            continue
        other = np.load(path).ravel().astype(np.float64)
        rows.append(
            (
                method,
                float(np.corrcoef(ours, other)[0, 1]),
                float(other.mean() / ours.mean()),
                float(np.percentile(np.abs(other - ours), 99) / ours.mean()),
            )
        )
    return rows


def accuracy_table() -> list[tuple[str, float, float]]:
    """(method, centre error %, mean error %) for a uniform 30 mm sphere (1 mm voxels), cone beam."""
    from bmdgan.projection import default_ap_geometry, project_volume
    from bmdgan.projection.phantoms import sphere_chords_mm, sphere_phantom
    from bmdgan.projection.reference import reference_project

    volume, centre = sphere_phantom((80, 80, 80), (1.0, 1.0, 1.0), radius_mm=30.0, value=1000.0)
    geometry = default_ap_geometry(volume, pixel_spacing_mm=0.5)
    analytic = sphere_chords_mm(geometry, centre, 30.0) * 1000.0 * 1e-4
    column, row = (int(round(v)) for v in geometry.project_points(centre))
    footprint = analytic > 0
    matrix = volume.geometry.ijk_to_lps()
    images = {
        "bmdgan (Joseph, 1 bilinear sample per plane)": project_volume(volume, geometry).image[0],
        "trilinear marcher, step 1 voxel": reference_project(volume.array, matrix, geometry, step_mm=1.0)[0],
        "trilinear marcher, step 0.5 voxel": reference_project(volume.array, matrix, geometry)[0],
    }
    return [
        (
            name,
            100 * abs(image[row, column] / analytic[row, column] - 1),
            100 * abs(image[footprint].mean() / analytic[footprint].mean() - 1),
        )
        for name, image in images.items()
    ]


# ---------------------------------------------------------------------------------------------- main
def _print_table(title: str, results: dict, samples: int, rays: int) -> None:
    print(f"\n{title}")
    print(
        f"  {'method':16s} {'threads':>7s} {'wall s':>8s} {'min s':>8s} {'cpu s':>8s} {'wall/ours':>9s} "
        f"{'cpu/ours':>8s} {'ns/sample':>9s} {'peak +MiB':>9s}"
    )
    ours = results.get("bmdgan", {})
    for method, row in results.items():
        if "error" in row:
            print(f"  {method:16s} failed: {row['error']}")
            continue
        wall = f"{row['wall_s'] / ours['wall_s']:9.2f}" if "wall_s" in ours else f"{'n/a':>9s}"
        cpu = f"{row['cpu_s'] / ours['cpu_s']:8.2f}" if "cpu_s" in ours else f"{'n/a':>8s}"
        peak = "n/a" if row["peak_extra_mib"] is None else f"{row['peak_extra_mib']:.0f}"
        print(
            f"  {method:16s} {row['threads']:7d} {row['wall_s']:8.3f} {row['min_wall_s']:8.3f} {row['cpu_s']:8.3f} "
            f"{wall} {cpu} "
            f"{1e9 * row['wall_s'] / (samples * rays):9.1f} {peak:>9s}"
        )


def _print_runs(label: str, row: dict) -> None:
    if "error" in row:
        print(f"    {label:36s} failed: {row['error']}")
    else:
        print(
            f"    {label:36s} {row['wall_s']:8.3f} s wall, {row['cpu_s']:.3f} s cpu "
            f"(renders: {', '.join(f'{w:.3f}' for w in row['walls_s'])})"
        )


def thread_test(case: Path, repeats: int) -> None:
    """Which thread count never loses to one thread: our projector alternating between 1 and 2 threads in
    one process, with OpenMP's default (spinning) and passive waiting, without and with one core kept busy
    by a busy-loop process."""
    results = {}
    for busy_cores, condition in ((0, "no busy loop"), (1, "one core busy")):
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy_cores)]
        try:
            if busy:
                time.sleep(1.0)
            print(f"\n  our projector, {condition}{' (a busy-loop process)' if busy else ''}; before: {_load()}")
            for waiting, spec in (("spinning (default)", "alternate"), ("passive", "alternate" + PASSIVE_SUFFIX)):
                row = run_child("bmdgan", case, repeats, spec)
                results[(condition, waiting)] = row
                if "error" in row:
                    print(f"    OpenMP waiting {waiting:18s} failed: {row['error']}")
                    continue
                print(
                    f"    OpenMP waiting {waiting:18s} 1 thread {row['wall_s']['1']:.3f} s, 2 threads "
                    f"{row['wall_s']['2']:.3f} s, 2 / 1 threads (median of paired renders) "
                    f"{row['paired_ratio']:.2f}"
                )
            print(f"  after: {_load()}")
        finally:
            for process in busy:
                process.kill()
                process.wait()
    print("\n  2 threads / 1 thread, median of paired renders (> 1: two threads lose to one):")
    print(f"    {'OpenMP waiting':20s}{'no busy loop':>16s}{'one core busy':>16s}")
    for waiting in ("spinning (default)", "passive"):
        cells = [
            results.get((condition, waiting), {}).get("paired_ratio") for condition in ("no busy loop", "one core busy")
        ]
        print(f"    {waiting:20s}" + "".join(f"{c:16.2f}" if c is not None else f"{'n/a':>16s}" for c in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed renders per measurement (median)")
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["small"])
    parser.add_argument(
        "--threads",
        nargs="+",
        default=["1", "default", "default" + PASSIVE_SUFFIX],
        help="thread counts to measure: integers or 'default' (torch's own choice), each "
        f"optionally with '{PASSIVE_SUFFIX}' (OMP_WAIT_POLICY=PASSIVE)",
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--competing-load",
        action="store_true",
        help="also time our projector alternating between 1 and 2 threads (OpenMP spinning and "
        "passive waiting), without and with a busy-loop process keeping one core busy",
    )
    parser.add_argument("--child", nargs=4, metavar=("METHOD", "CASE", "THREADS", "IMAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        method, case, threads, image = args.child
        if threads == "alternate":
            print(json.dumps(alternating_child(Path(case), args.repeats)))
        else:
            print(json.dumps(child(method, Path(case), args.repeats, threads, Path(image) if image else None)))
        return 0

    import torch

    started = time.perf_counter()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}: python {sys.version.split()[0]}, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs, torch default {torch.get_num_threads()} threads"
    )
    versions = []
    for name in PEERS:
        if _importable(name):
            from importlib.metadata import version

            versions.append(f"{name} {version(name)}")
    print(", ".join(versions) or "DiffDRR and nanodrr are not importable here: see benchmarks/README.md")
    print(_load())
    methods = [m for m in args.methods if m not in PEERS or _importable(m)]
    with tempfile.TemporaryDirectory(prefix="bench_drr_") as folder:
        for size in args.sizes:
            case, census = prepare(size, Path(folder))
            shape, spacing = SIZES[size]
            samples, rays = census["samples_per_ray"], census["rays"]
            print(
                f"\n{size} CT {shape[2]} x {shape[1]} x {shape[0]} voxels (i x j x k) of "
                f"{spacing[0]:g} x {spacing[1]:g} x {spacing[2]:g} mm; detector {COLUMNS} x {ROWS} = {rays} rays, "
                f"AP cone beam"
            )
            print(
                f"  rays hitting the CT: {100 * census['hit_fraction']:.1f} %, crossing its whole depth: "
                f"{100 * census['full_depth_fraction']:.1f} % (all rays hit: no method gains by skipping misses)"
            )
            print(
                f"  samples per ray, every method: N = {samples} (the planes of index axis "
                f"{'ijk'[MARCH_AXIS]} that our projector crosses; march axes of the hit rays: "
                f"{['ijk'[a] for a in census['march_axes']]})"
            )
            tables = {}
            for threads in args.threads:
                print(f"\n  [{size}, threads={threads}] before: {_load()}")
                images = {}
                results = {}
                for method in methods:
                    image = Path(folder) / f"{size}_{method}_{threads}.npy"
                    results[method] = run_child(method, case, args.repeats, threads, image)
                    images[method] = image
                    _print_runs(method, results[method])
                print(f"  after: {_load()}")
                tables[threads] = results
                _print_table(
                    f"{size} CT, {threads} thread(s), median of {args.repeats} renders "
                    f"({samples} samples x {rays} rays per render):",
                    results,
                    samples,
                    rays,
                )
                if "bmdgan" in images and images["bmdgan"].is_file():
                    print("  image agreement with bmdgan (same rays, same units):")
                    for method, correlation, mean_ratio, p99 in agreement(images):
                        print(
                            f"    {method:16s} correlation {correlation:.5f}, mean ratio {mean_ratio:.4f}, "
                            f"99th percentile |difference| {100 * p99:.2f} % of our mean"
                        )
            if len(tables) > 1:
                print(
                    f"\n  {size} CT, time relative to bmdgan at the same thread count, wall (cpu); "
                    f"> 1: bmdgan is faster:"
                )
                print("    " + f"{'method':16s}" + "".join(f"{'threads=' + t:>24s}" for t in tables))
                for method in methods:
                    cells = []
                    for results in tables.values():
                        row, ours = results.get(method, {}), results.get("bmdgan", {})
                        if "wall_s" in row and "wall_s" in ours:
                            cell = f"{row['wall_s'] / ours['wall_s']:.2f} ({row['cpu_s'] / ours['cpu_s']:.2f})"
                        else:
                            cell = "n/a"
                        cells.append(f"{cell:>24s}")
                    print(f"    {method:16s}" + "".join(cells))
            if args.competing_load and size == args.sizes[0]:
                thread_test(case, args.repeats)
    print("\naccuracy on a uniform 30 mm sphere, 1 mm voxels, cone beam (error vs exact line integrals):")
    for name, centre_error, mean_error in accuracy_table():
        print(f"  {name:46s} centre {centre_error:6.3f} %   mean over the sphere {mean_error:6.3f} %")
    print(f"\n{_load()}; benchmark took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
