"""A trial's command under `sweep.supervisor`, so that the whole tree it starts dies with the trial.

Ray kills only a trial's worker process, and torchrun's ranks run in sessions of their own, so neither Ray
nor a process-group kill reaches them. The supervisor holds the tree (it is a child subreaper) and ends it
when the command exits, when the trial stops it, and when the trial's worker dies (parent-death signal).
The supervisor itself runs in a session of its own, so a Ctrl-C in the driver's terminal reaches the
trainer only through the driver's orderly stop (README, "Signals").
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sweep.trial.supervisor import GRACE_S, KILL_WAIT_S


class SupervisedProcess:
    """`cmd` under a supervisor, with stdout and stderr appended to `log_path`."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: str | None = None):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = package_pythonpath(env.get("PYTHONPATH"))
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "sweep.trial.supervisor", str(os.getpid()), "--", *cmd],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, cwd=cwd, start_new_session=True)
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        """The command's exit code (negative: killed by that signal) once it and its tree are gone."""
        return self.proc.poll()

    def kill(self) -> None:
        """End the command and every process it started (a no-op once they have exited)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(GRACE_S + KILL_WAIT_S + 2.0)
            except subprocess.TimeoutExpired:
                # Still the command's parent-death signal: torchrun is told even now.
                self.proc.kill()
                self.proc.wait()


def package_pythonpath(rest: str | None = None) -> str:
    """PYTHONPATH with this project's root first, so `-m sweep.supervisor` and `-m trainer` import from a
    checkout; `rest` defaults to this process's PYTHONPATH."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH") if rest is None else rest
    parts = [root, *(p for p in (rest or "").split(os.pathsep) if p and p != root)]
    return os.pathsep.join(parts)
