"""Start-up time of the command line: ``bmdgan --help`` and ``bmdgan drr --help`` against a bare ``python -c pass``
and against ``import numpy`` / ``import torch`` (what the help avoids), median of repeats.

Usage: python benchmarks/bench_startup.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def median_seconds(command: list[str], repeats: int) -> float:
    """Median wall time (s) of ``repeats`` runs of ``command`` (after one unmeasured run that warms the disk cache)."""
    subprocess.run(command, check=True, capture_output=True)
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    repeats = parser.parse_args().repeats
    python = [sys.executable]
    rows = [
        ("python -c pass", python + ["-c", "pass"]),
        ("bmdgan --help", python + ["-m", "bmdgan", "--help"]),
        ("bmdgan drr --help", python + ["-m", "bmdgan", "drr", "--help"]),
        ("python -c 'import numpy'", python + ["-c", "import numpy"]),
        ("python -c 'import torch'", python + ["-c", "import torch"]),
    ]
    baseline = None
    print(f"median of {repeats} runs, {sys.executable}")
    for label, command in rows:
        seconds = median_seconds(command, repeats)
        baseline = baseline or seconds
        print(f"{label:<26}{seconds:7.3f} s  ({seconds - baseline:+.3f} s over the bare interpreter)")


if __name__ == "__main__":
    main()
