"""Pool workers that end with their parent: a SIGKILLed command must leave no process behind.

A ``ProcessPoolExecutor`` worker blocks on its task queue, whose other end its sibling workers also hold, so it
never notices that the parent was killed. :func:`die_with_parent` (the pool's ``initializer``) asks Linux to kill
the worker with its parent (``PR_SET_PDEATHSIG``) and, on every system, watches the parent process id from a
daemon thread (a changed parent means the parent is gone).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

PARENT_POLL_S = 0.5
"""How often the watcher thread checks that the parent still lives (s)."""
PR_SET_PDEATHSIG = 1


def _watch(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(1)  # no clean-up: the parent that would collect the results is gone
        time.sleep(PARENT_POLL_S)


def die_with_parent(parent_pid: int) -> None:
    """Initializer of a pool worker: end this process as soon as ``parent_pid`` (the pool's owner) ends."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):  # the watcher below still ends the worker
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)
    threading.Thread(target=_watch, args=(parent_pid,), daemon=True, name="die-with-parent").start()
