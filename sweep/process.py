"""A trial's trainer as a process group of its own, and the guarantee that the group dies with the trial.

Ray kills only the worker process of a trial; torchrun and its ranks would outlive it. So the command
starts in a new session (its process group id is its pid), the trial kills the whole group when it ends
for any reason, and a small guard process (`sweep.guard`) kills it when the trial's worker process dies
without getting the chance (a killed driver, a lost node, a SIGKILL).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

GUARD_POLL_S = 0.5


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, grace_s: float = 1.0, reap: subprocess.Popen | None = None) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after `grace_s`; `reap` is our own child in it."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if reap is not None:
                reap.poll()
            if not group_alive(pgid):
                return
            time.sleep(0.02)


class GroupProcess:
    """`cmd` running in its own process group with stdout and stderr appended to `log_path`."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: str | None = None):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=cwd, start_new_session=True)
        self.pgid = self.proc.pid
        self.guard = subprocess.Popen([sys.executable, "-m", "sweep.guard", str(os.getpid()), str(self.pgid)],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True,
                                      env={**os.environ, "PYTHONPATH": package_pythonpath()})

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self, grace_s: float = 1.0) -> None:
        """End every process of the group (a no-op once all have exited) and the guard."""
        kill_group(self.pgid, grace_s, reap=self.proc)
        self.proc.poll()
        if self.guard.poll() is None:
            self.guard.kill()
        self.guard.wait()


def package_pythonpath() -> str:
    """PYTHONPATH with this project's root first, so `-m sweep.guard` and `-m trainer` import from a checkout."""
    root = str(Path(__file__).resolve().parent.parent)
    rest = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{rest}" if rest else root
