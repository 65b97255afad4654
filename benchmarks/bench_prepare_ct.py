"""Benchmark of preparing a whole-pelvis CT: body, both femurs, hip bones, landmarks, calibration, measurement.

For each CT (default: both ``pelvic_reference`` CTs, 512 x 512 x 137-163 voxels) the steps below run in
order, ``--repeats`` times (each repeat reads the CT again, so nothing is reused between repeats), and the
median wall time of every step is printed, with the total. The per-hip steps run once per hip found and
are summed over the hips. They are the engine calls :func:`bmdgan.ct.pipeline.analyse_hips` makes, timed
one by one.

Adding a step: append a :class:`Step` to ``STEPS`` (or insert it where it belongs); its function takes the
``state`` dict (``ct``, ``smooth``, ``body``, ``hips``, ``metal``, ``calibration``, ``segmentations`` by side,
``pelvis``, per hip ``hip``/``landmarks``/``region``) and stores what later steps need. Consecutive per-hip
steps run as one block per hip: every femur is segmented before the hip bones, which are found around all
of them. Usage::

    python benchmarks/bench_prepare_ct.py [--repeats 3] [--threads 2] [CT ...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "BMDGAN"))
DEFAULT_CTS = [
    REPOSITORY.parent / "shared" / "data" / "ct" / "pelvic_reference" / f"Pelvic-Ref-00{n}.nii.gz" for n in (2, 5)
]


@dataclass
class Step:
    """A named step; ``per_hip`` steps run once per hip found (``state['hip']`` set)."""

    name: str
    run: Callable[[dict], None]
    per_hip: bool = False


def _read(state: dict) -> None:
    from bmdgan.io import read_ct

    state["ct"] = read_ct(state["path"])


def _smooth(state: dict) -> None:
    from bmdgan.ct.head import smoothed_hu

    state["smooth"] = smoothed_hu(state["ct"])


def _find_hips(state: dict) -> None:
    from bmdgan.ct.hips import find_hips

    state["hips"] = find_hips(state["ct"], state["smooth"])


def _metal(state: dict) -> None:
    from bmdgan.ct.segmentation import metal_mask

    state["metal"] = metal_mask(state["ct"])


def _body(state: dict) -> None:
    from bmdgan.ct.body import body_mask

    state["body"] = body_mask(state["ct"])


def _calibrate(state: dict) -> None:
    from bmdgan.ct.phantomless import phantomless_calibration

    state["calibration"] = phantomless_calibration(state["ct"], body=state["body"])


def _hip_bones(state: dict) -> None:
    from bmdgan.ct.pelvis import label_pelvis

    femurs = {side: segmentation.femur for side, segmentation in state["segmentations"].items()}
    state["pelvis"] = label_pelvis(state["ct"], state["body"], femurs)


def _segment(state: dict) -> None:
    from bmdgan.ct.hips import fitted_head
    from bmdgan.ct.segmentation import segment_with_head

    hip = state["hip"]
    head = fitted_head(state["ct"], hip)
    segmentation = segment_with_head(state["ct"], state["smooth"], head, hip.shaft, state["metal"])
    state.setdefault("segmentations", {})[hip.side] = segmentation


def _landmarks(state: dict) -> None:
    from bmdgan.ct.landmarks import estimate_landmarks

    segmentation = state["segmentations"][state["hip"].side]
    state["landmarks"] = estimate_landmarks(
        segmentation.femur, state["ct"].geometry, segmentation.head, segmentation.shaft
    )


def _region(state: dict) -> None:
    from bmdgan.ct.pf_region import pf_region

    femur = state["segmentations"][state["hip"].side].femur
    state["region"] = pf_region(femur, state["ct"].geometry, state["landmarks"])


def _measure(state: dict) -> None:
    from bmdgan.ct.measurement import measure_pf

    segmentation = state["segmentations"][state["hip"].side]
    state.setdefault("measurements", []).append(
        (
            state["hip"].side,
            measure_pf(
                state["ct"],
                segmentation.femur,
                state["region"],
                state["landmarks"],
                state["calibration"],
                segmentation.metal,
            ),
        )
    )


STEPS: list[Step] = [
    Step("read CT", _read),
    Step("smooth", _smooth),
    Step("body mask", _body),
    Step("find hips (shafts, heads, sides)", _find_hips),
    Step("metal mask", _metal),
    Step("calibrate (phantomless, in the body)", _calibrate),
    Step("segment femur", _segment, per_hip=True),
    Step("hip bones + sacrum", _hip_bones),
    Step("landmarks", _landmarks, per_hip=True),
    Step("PF region", _region, per_hip=True),
    Step("measure", _measure, per_hip=True),
]


def prepare_once(path: Path) -> tuple[dict[str, float], dict]:
    """Run ``STEPS`` once on ``path``, in order (a run of per-hip steps once per hip found): seconds per step
    (per-hip steps summed over the hips) and the final state."""
    state: dict = {"path": path}
    seconds: dict[str, float] = {}
    for per_hip, group in itertools.groupby(STEPS, key=lambda step: step.per_hip):
        group = list(group)
        for hip in state["hips"] if per_hip else [None]:
            state["hip"] = hip
            for step in group:
                start = time.perf_counter()
                step.run(state)
                seconds[step.name] = seconds.get(step.name, 0.0) + time.perf_counter() - start
    return seconds, state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cts", nargs="*", type=Path, default=DEFAULT_CTS, help="CT volumes (default: pelvic_reference)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per CT; the median is printed (default 3)")
    parser.add_argument(
        "--threads", type=int, default=None, help="OMP/MKL threads (default: as set in the environment)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[name] = str(args.threads)
    print(
        f"# bench_prepare_ct: median of {args.repeats} runs, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    for path in args.cts:
        runs = []
        for _ in range(args.repeats):
            seconds, state = prepare_once(path)
            runs.append(seconds)
        shape = "x".join(str(n) for n in state["ct"].array.shape[::-1])
        hips = ", ".join(f"{side} aBMD {m.ct_abmd_g_cm2:.3f} g/cm2" for side, m in state["measurements"])
        print(f"\n{path.name} ({shape} voxels; {hips})")
        total = [sum(run.values()) for run in runs]
        for step in STEPS:
            times = [run.get(step.name, 0.0) for run in runs]
            print(f"  {step.name:<36s} {statistics.median(times):7.2f} s" + ("  (all hips)" if step.per_hip else ""))
        print(f"  {'total':<36s} {statistics.median(total):7.2f} s  (runs: {', '.join(f'{t:.1f}' for t in total)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
