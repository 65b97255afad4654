"""Peak memory (resident set, MB) of one ``bmdgan estimate`` process on the largest radiograph it accepts and on
decompression bombs (goals: under 2 GB and under 200 MB), beside a small radiograph for reference.

Each estimate runs in its own process, measured with ``os.wait4`` from a small launcher process (the peak RSS of
that child alone). Inputs are
made in a temporary folder: a 16-bit PNG of exactly 50 megapixels (``MAX_RADIOGRAPH_PIXELS``, 8000 x 6250) with a
hip-like phantom and noise, the 12000 x 12000 PNG of issue 20 (144 MB of pixels in 140 kB), and a 30000 x 30000
PNG (900 megapixels of zeros, PIL's own decompression-bomb limit).

Usage: python benchmarks/bench_memory.py [--model FOLDER] [--skip-largest]
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path


def zero_png(path: Path, width: int, height: int) -> Path:
    """A complete 8-bit grey PNG of zeros, compressed as one stream (a decompression bomb)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    rows_per_block = max(1, 8_000_000 // len(row))
    chunks, done = [], 0
    while done < height:
        count = min(rows_per_block, height - done)
        chunks.append(compressor.compress(row * count))
        done += count
    chunks.append(compressor.flush())

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(chunks)) + chunk(b"IEND", b"")
    )
    return path


def phantom_png(path: Path, rows: int, columns: int) -> Path:
    """A 16-bit grey PNG: two bright femur-like discs and shafts in a body, with noise (so it does not compress
    to nothing)."""
    import numpy as np
    from PIL import Image

    image = np.empty((rows, columns), np.uint16)
    rng = np.random.default_rng(0)
    for start in range(0, rows, 500):  # by bands: the benchmark itself stays small
        y = np.arange(start, min(rows, start + 500))[:, None] / rows
        x = np.arange(columns)[None, :] / columns
        body = np.broadcast_to(np.abs(x - 0.5) < 0.45, (y.shape[0], columns)) * 0.3
        bone = np.zeros((y.shape[0], columns), np.float32)
        for centre in (0.3, 0.7):
            head = ((x - centre) / 0.06) ** 2 + ((y - 0.35) / 0.06) ** 2 < 1
            shaft = (np.abs(x - centre - 0.03 * np.sign(centre - 0.5)) < 0.035) & (y > 0.35)
            bone = np.maximum(bone, head | shaft)
        band = 4095 * (0.1 + body + 0.5 * bone) + rng.normal(0, 40, bone.shape)
        image[start : start + y.shape[0]] = np.clip(band, 0, 65535).astype(np.uint16)
    Image.fromarray(image).save(path, compress_level=1)
    return path


LAUNCHER = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=sys.stderr)
_, status, usage = os.wait4(process.pid, 0)
print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""
"""Runs the command and prints its peak RSS (kB) and exit code. Linux counts the memory a child had before it
exec'd (a copy of its parent's): a small launcher keeps this benchmark's own arrays out of the figure."""


def peak_rss_mb(command: list[str]) -> tuple[float, int, float, str]:
    """(peak RSS in MB, exit code, seconds, last stderr line) of ``command`` run as a child process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True)
    peak_kb, code = (int(v) for v in done.stdout.split())
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return peak_kb / 1024.0, code, time.perf_counter() - start, (lines or [""])[-1][:150]


def main() -> None:
    from bmdgan.io.radiograph import MAX_RADIOGRAPH_PIXELS

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model folder (default: the bundled default model)")
    parser.add_argument("--skip-largest", action="store_true", help="skip the 50-megapixel radiograph")
    args = parser.parse_args()
    columns = 8000
    rows = MAX_RADIOGRAPH_PIXELS // columns
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        inputs = [("small radiograph 640 x 512 (reference)", phantom_png(folder / "small.png", 512, 640), "< 2 GB")]
        if not args.skip_largest:
            inputs.append(
                (
                    f"largest accepted: {columns} x {rows} 16-bit PNG ({rows * columns / 1e6:.0f} MP)",
                    phantom_png(folder / "largest.png", rows, columns),
                    "< 2 GB",
                )
            )
        inputs += [
            ("12000 x 12000 PNG (refused from its header)", zero_png(folder / "huge.png", 12000, 12000), "< 200 MB"),
            ("30000 x 30000 decompression bomb", zero_png(folder / "bomb.png", 30000, 30000), "< 200 MB"),
        ]
        print(f"{'input':58s} {'file MB':>8s} {'peak RSS MB':>12s} {'goal':>9s} {'exit':>5s} {'s':>6s}")
        for index, (title, path, goal) in enumerate(inputs):
            command = [sys.executable, "-m", "bmdgan", "estimate", str(path), "--out", str(folder / f"out{index}")]
            command += ["--pixel-mm", "0.15"]  # PNGs state no spacing; the hip detector works in mm
            if args.model:
                command += ["--model", args.model]
            peak, code, seconds, last = peak_rss_mb(command)
            print(f"{title:58s} {path.stat().st_size / 1e6:8.1f} {peak:12.0f} {goal:>9s} {code:5d} {seconds:6.1f}")
            if code != 0:
                print(f"    {last}")


if __name__ == "__main__":
    main()
