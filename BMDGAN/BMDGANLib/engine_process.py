"""Run a ``bmdgan`` command in a separate process, as the modules do for work that would freeze Slicer's GUI
thread (training, evaluation): output to a log file, stopped like Ctrl+C. No Qt, no slicer: runs headless.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import bmdgan


def engine_environment() -> dict[str, str]:
    """This process's environment with the engine's parent folder first on PYTHONPATH, so that ``python -m bmdgan``
    finds the engine wherever Slicer installed it (next to the modules, not in site-packages)."""
    environment = dict(os.environ)
    package_parent = str(Path(bmdgan.__file__).resolve().parents[1])
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, environment.get("PYTHONPATH")]))
    return environment


def engine_python() -> str:
    """The interpreter that runs ``python -m bmdgan``: Slicer's ``PythonSlicer`` launcher when it is on PATH (inside
    Slicer ``sys.executable`` is the application, which cannot run a module), else this interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def start_engine_process(
    arguments: list[str], log_path: str | Path, python: str | None = None, append: bool = False
) -> subprocess.Popen:
    """Start ``python -m bmdgan ARGUMENTS`` (``python``: default :func:`engine_python`) with stdout and stderr going to
    ``log_path`` (appended to when ``append``, e.g. a resumed training's log)."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a" if append else "w") as log:
        return subprocess.Popen(
            [python or engine_python(), "-m", "bmdgan", *arguments],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=engine_environment(),
            **_interruptible(),
        )


def _interruptible() -> dict:
    """Popen options so that :func:`interrupt` can stop the child like Ctrl+C: on Windows a process group of its
    own (it receives CTRL_BREAK); on POSIX SIGINT back to its default in the child, which a launcher that ignores
    it (a shell's background job) would otherwise pass on, so a stop during start-up is not lost."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"preexec_fn": lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)}


def interrupt(process: subprocess.Popen, timeout_s: float) -> int:
    """Stop the process like Ctrl+C (SIGINT), killing it if it has not stopped after ``timeout_s`` seconds;
    returns its exit code (130 for bmdgan's interrupted commands)."""
    if process.poll() is None:
        process.send_signal(signal.CTRL_BREAK_EVENT if os.name == "nt" else signal.SIGINT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def log_tail(log_path: str | Path, lines: int = 3) -> str:
    """The last non-empty lines of a process's log (tqdm's carriage-return updates split too), joined by " | "."""
    path = Path(log_path)
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").replace("\r", "\n")
    return " | ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])
