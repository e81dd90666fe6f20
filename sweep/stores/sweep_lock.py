"""One driver per sweep: `sweep run` (once its name is claimed), `sweep resume` and `sweep verify` hold the
lock of the sweep (or verification) they write, for as long as they run (docs/running.md, "One driver per
sweep").

The lock is an exclusive `flock` on `driver.lock` in the sweep's folder on this node's disk, taken without
waiting: a second driver of the same sweep finds it held and stops with exit 2, before Ray starts and before
it writes anything, naming the holder the file describes (host, pid, command, start time). The kernel drops
a `flock` when its holder's last descriptor closes, a SIGKILLed driver's included, so a lock left by a dead
driver is simply free: no pid is ever guessed stale. The file itself is never removed (removing a lock file
lets two drivers lock two different files of one name); what it says matters only while it is locked.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from sweep.errors import InputError

LOCK_FILE = "driver.lock"


class SweepLock:
    """The held lock of one sweep's folder; `release` (or leaving the `with` block) frees it."""

    def __init__(self, file):
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> SweepLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(folder: Path) -> dict | None:
    """What the lock file says about the driver that holds (or last held) the lock, if it says anything."""
    try:
        return json.loads((folder / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None


def describe(found: dict | None) -> str:
    if not found:
        return "another driver (which has not yet written who it is)"
    since = time.strftime("%H:%M", time.localtime(found.get("since", 0)))
    day = time.strftime("%Y-%m-%d", time.localtime(found.get("since", 0)))
    if day != time.strftime("%Y-%m-%d"):
        since = f"{day} {since}"
    return f"pid {found.get('pid')} on host {found.get('host')} since {since} ({found.get('command')})"


def take(folder: Path, name: str, command: str, what: str = "sweep") -> SweepLock:
    """Lock the folder of the sweep (or verification: `what`) `name` for this process; an InputError naming
    the holder when another driver has it."""
    folder.mkdir(parents=True, exist_ok=True)
    # "a": created if missing and never truncated by opening, so a failed attempt changes nothing.
    file = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        raise InputError(name, f"the {what} is being run by {describe(holder(folder))}; wait for it or stop "
                               f"it") from None
    file.truncate(0)
    file.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "command": command,
                           "since": time.time()}) + "\n")
    file.flush()
    return SweepLock(file)
