"""Time ``bmdgan --help`` (goal: under 2 s) against a bare ``python -c pass`` start, median of repeats.

Usage: python benchmarks/bench_startup.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def median_seconds(command: list[str], repeats: int) -> float:
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    repeats = parser.parse_args().repeats
    baseline = median_seconds([sys.executable, "-c", "pass"], repeats)
    help_time = median_seconds([sys.executable, "-m", "bmdgan", "--help"], repeats)
    torch_time = median_seconds([sys.executable, "-c", "import torch"], repeats)
    print(f"python -c pass        : {baseline:.3f} s (baseline)")
    print(f"bmdgan --help         : {help_time:.3f} s ({help_time / baseline:.1f}x baseline; goal < 2 s)")
    print(f"python -c import torch: {torch_time:.3f} s (what --help avoids)")


if __name__ == "__main__":
    main()
