"""`python -m sweep.trial.supervisor PARENT_PID -- CMD...`: run a trial's command so that nothing it starts outlives it.

Killing the command's process group is not enough: torchrun starts each rank in a session of its own, and
a trial's worker that is SIGKILLed (with the driver, by Ray, with its node) runs no cleanup code at all.
So the trial starts its command through this small process, which
- is a child subreaper (`prctl(PR_SET_CHILD_SUBREAPER)`): a descendant whose parent dies is re-parented to
  the supervisor instead of init, so the whole tree, whatever sessions it makes, stays below it in /proc;
- gets SIGTERM from the kernel when the trial's worker dies (`prctl(PR_SET_PDEATHSIG)`), however it died;
- when the command exits, or on SIGTERM, SIGINT or SIGHUP, ends every descendant left: SIGTERM, a grace
  period, then SIGKILL until none is left.
It exits as the command did (a command killed by a signal ends the supervisor with that signal).

Why not a cgroup: it would hold the tree as well, but needs a delegated cgroup hierarchy, which containers
and shared nodes rarely grant; a subreaper needs only Linux >= 3.4. psutil is not a dependency, so the tree
is read from /proc.

The parent-death signal is tied to the *thread* that started the supervisor, not its process: the trial
starts it from the thread that runs the trial function and kills it before that function returns, so the
signal only ever fires when the worker dies without that chance.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
GRACE_S = 3.0      # between SIGTERM and SIGKILL: lets torchrun and the ranks take down their process group
KILL_WAIT_S = 5.0  # for SIGKILLed processes to leave /proc
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stop(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _children_by_parent() -> dict[int, list[int]]:
    """Live processes by parent pid (zombies hold nothing and are reaped by whoever is their parent)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name may hold spaces and parentheses; the fields after its last ')' do not.
            state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError, ValueError):
            continue
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(entry.name))
    return children


def descendants(root: int) -> list[int]:
    children = _children_by_parent()
    found, todo = [], [root]
    while todo:
        for pid in children.get(todo.pop(), ()):
            found.append(pid)
            todo.append(pid)
    return found


def _reap() -> None:
    """Collect every exited child: our own, and descendants re-parented to us."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _gone_within(seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        _reap()
        if not descendants(os.getpid()):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def end_tree(grace_s: float = GRACE_S) -> None:
    """SIGTERM every descendant, wait up to `grace_s`, then SIGKILL whatever is left until nothing is
    (walking the tree again each time: a process may fork in between)."""
    _signal_all(descendants(os.getpid()), signal.SIGTERM)
    if _gone_within(grace_s):
        return
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline:
        pids = descendants(os.getpid())
        if not pids:
            return
        _signal_all(pids, signal.SIGKILL)
        _gone_within(0.1)


def _start(cmd: list[str]) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            # If the supervisor itself is SIGKILLed, the command (torchrun) still hears of it and stops its ranks.
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
            os.execvp(cmd[0], cmd)
        except BaseException as e:  # noqa: B036 - whatever happens, this forked copy must not go on as a supervisor
            print(f"sweep.trial.supervisor: cannot run {cmd[0]}: {e}", file=sys.stderr, flush=True)
        finally:
            os._exit(127)
    return pid


def _exit_like(code: int) -> NoReturn:
    """Exit with `code`, or by signal -`code` as the command did."""
    if code < 0:
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code if code >= 0 else 128 - code)


def main(argv: list[str]) -> int:
    """Returns only on a usage error or a parent gone before it started; otherwise exits as the command did."""
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m sweep.trial.supervisor PARENT_PID -- CMD...", file=sys.stderr)
        return 2
    parent, cmd = int(argv[0]), argv[2:]
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        return 1

    def stop(signum, frame):
        raise _Stop(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, stop)
    code = None
    try:
        child = _start(cmd)
        while code is None:
            pid, status = os.waitpid(-1, 0)  # also reaps descendants re-parented to us
            if pid == child:
                code = os.waitstatus_to_exitcode(status)
    except _Stop as e:
        code = -e.signum
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # the tree is being ended: a second signal must not cut that short
    end_tree()
    _exit_like(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
