"""One driver per sweep (sweep.stores.sweep_lock): a second process finds the lock held and is told who holds
it, without changing the file; a holder that dies, SIGKILLed, leaves the lock free for the next."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest
from paths import REPO

from sweep.errors import InputError
from sweep.stores import sweep_lock

HOLD = ("import sys, time; from pathlib import Path; from sweep.stores import sweep_lock; "
        "held = sweep_lock.take(Path(sys.argv[1]), 'twin', 'sweep resume twin'); print('held', flush=True); time.sleep(600)")


def _holder(folder) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_driver_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path):
    holder = _holder(tmp_path)
    try:
        said = (tmp_path / sweep_lock.LOCK_FILE).read_text()
        with pytest.raises(InputError) as refused:
            sweep_lock.take(tmp_path, "twin", "sweep resume twin")
        assert refused.value.where == "twin"
        assert re.fullmatch(rf"the sweep is being run by pid {holder.pid} on host {re.escape(socket.gethostname())} "
                            rf"since \d\d:\d\d \(sweep resume twin\); wait for it or stop it", refused.value.message)
        assert (tmp_path / sweep_lock.LOCK_FILE).read_text() == said   # the refused driver wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with sweep_lock.take(tmp_path, "twin", "sweep resume twin"):
        assert sweep_lock.holder(tmp_path)["pid"] == os.getpid()
        # The lock is the process's open file, not its pid: this process cannot take it twice either.
        with pytest.raises(InputError, match=f"pid {os.getpid()}"):
            sweep_lock.take(tmp_path, "twin", "sweep resume twin")
    with sweep_lock.take(tmp_path, "twin", "sweep run --name twin"):   # released: free again
        pass


def test_a_lock_whose_holder_has_not_said_who_it_is_is_still_refused(tmp_path):
    holder = _holder(tmp_path)
    try:
        (tmp_path / sweep_lock.LOCK_FILE).write_text("")
        with pytest.raises(InputError, match="another driver"):
            sweep_lock.take(tmp_path, "twin", "sweep resume twin")
    finally:
        holder.kill()
        holder.wait()
