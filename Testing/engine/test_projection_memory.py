"""Memory bound: a 512x512x300 CT into a 512x1024 detector, 5 masked channels, fits in 4 GiB on CPU."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

LIMIT_GIB = 4.0

SCRIPT = textwrap.dedent("""
    import json, resource
    import numpy as np
    import torch
    from bmdgan.io import Volume, VolumeGeometry
    from bmdgan.projection import Projector, default_ap_geometry

    values = np.empty((300, 512, 512), np.float32)
    values[:] = np.linspace(0.0, 1000.0, 512, dtype=np.float32)  # mg/cm3, varies along i
    labels = (np.arange(512) * 5 // 512).astype(np.uint8)[None, None, :]  # 5 slabs along i
    volume = Volume(values, VolumeGeometry((0.8, 0.8, 1.0), (0.0, 0.0, 0.0)), unit="mg/cm3")
    geometry = default_ap_geometry(volume, columns=512, rows=1024, pixel_spacing_mm=0.8)
    masks = {f"label{n}": np.broadcast_to(labels == n, values.shape) for n in range(5)}
    image = Projector.from_volume(volume, masks=masks, include_unmasked=True).project(geometry)
    # The peak of this process's own memory since it started: VmHWM (ru_maxrss keeps the parent's peak across exec,
    # so a test process that had grown large before starting this one would be counted).
    try:
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        peak_mib = int(status.split()[0]) / 1024
    except (OSError, IndexError):
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mib": peak_mib,
                      "shape": list(image.shape),
                      "partition_error": float(np.abs(image[1:].sum(0) - image[0]).max() / image[0].max()),
                      "centre": float(image[0, 512, 256])}))
""")


def test_large_ct_masked_projection_peak_memory_under_4_gib():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["shape"] == [6, 1024, 512]
    assert report["peak_mib"] < LIMIT_GIB * 1024, report
    assert report["partition_error"] < 1e-4
    # central ray: 512 voxels of 0.8 mm at the middle column's ~500 mg/cm3 -> 409.6 mm * 500 * 1e-4 = 20.5 g/cm2
    assert 20.0 < report["centre"] < 21.0, report
