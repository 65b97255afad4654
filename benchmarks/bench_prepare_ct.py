"""Benchmark of preparing a whole-pelvis CT as ``bmdgan measure-ct`` does, per step (goal: 30 s on 2 cores).

For each CT (default: both ``pelvic_reference`` CTs, 512 x 512 x 137-163 voxels) the CT is read, then the
engine's own calls run in order and are timed: the hip search (smoothing, both shafts and heads, sides), the body
mask, then :func:`bmdgan.ct.pipeline.analyse_hips` on both hips, whose progress callback names
each step (segment, landmarks, PF region, calibrate, measure, hip bones); the time between two callbacks is the
step's. Every repeat reads the CT again (the engine caches per CT object, so nothing is reused). The median of
``--repeats`` runs is printed per step, with the total from the first engine call to the last measurement.

Usage::

    python benchmarks/bench_prepare_ct.py [--repeats 3] [--threads 2] [CT ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "BMDGAN"))
DEFAULT_CTS = [
    REPOSITORY.parent / "shared" / "data" / "ct" / "pelvic_reference" / f"Pelvic-Ref-00{n}.nii.gz" for n in (2, 5)
]


def prepare_once(path: Path) -> tuple[dict[str, float], list]:
    """Seconds per step of one preparation of ``path`` (steps of several hips summed) and the analyses."""
    from bmdgan.ct.pipeline import analyse_hips, body_of, hip_search
    from bmdgan.io import read_ct

    seconds: dict[str, float] = {}

    def timed(name: str, call):
        start = time.perf_counter()
        result = call()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        return result

    ct = timed("read CT", lambda: read_ct(path))
    timed("find hips (smooth, shafts, heads, sides)", lambda: hip_search(ct))
    timed("body mask", lambda: body_of(ct))
    marks: list[tuple[str, float]] = []
    analyses = analyse_hips(ct, side="both", progress=lambda step: marks.append((step, time.perf_counter())))
    marks.append(("end", time.perf_counter()))
    for (step, start), (_, stop) in zip(marks, marks[1:]):
        seconds[step] = seconds.get(step, 0.0) + stop - start
    return seconds, analyses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cts", nargs="*", type=Path, default=DEFAULT_CTS, help="CT volumes (default: pelvic_reference)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per CT; the median is printed (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="OMP/MKL threads (default: the environment's)")
    args = parser.parse_args(argv)
    if args.threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = str(args.threads)
    print(
        f"# bench_prepare_ct: median of {args.repeats} runs, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for path in args.cts:
        runs, analyses = [], []
        for _ in range(args.repeats):
            seconds, analyses = prepare_once(path)
            runs.append(seconds)
        shape = "x".join(str(n) for n in analyses[0].ct.array.shape[::-1])
        hips = ", ".join(f"{a.side} aBMD {a.measurement.ct_abmd_g_cm2:.3f} g/cm2" for a in analyses)
        print(f"\n{path.name} ({shape} voxels; {hips})")
        for step in runs[0]:
            print(f"  {step:<42s} {statistics.median(run[step] for run in runs):7.2f} s")
        reading = [run["read CT"] for run in runs]
        total = [sum(run.values()) - run["read CT"] for run in runs]
        print(
            f"  {'total after reading':<42s} {statistics.median(total):7.2f} s  (runs: "
            f"{', '.join(f'{t:.1f}' for t in total)}; reading {statistics.median(reading):.1f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
