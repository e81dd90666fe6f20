"""`python -m sweep.guard PARENT_PID PGID`: kill process group PGID once PARENT_PID is gone.

Started by a trial's worker (`sweep.process`). The guard notices the worker's death by being re-parented
(so a recycled pid cannot fool it), then terminates the trainer's group. It exits by itself once the group
is empty.
"""
from __future__ import annotations

import os
import sys
import time

from sweep.process import GUARD_POLL_S, group_alive, kill_group


def main(argv: list[str]) -> int:
    parent, pgid = int(argv[0]), int(argv[1])
    while group_alive(pgid):
        if os.getppid() != parent:
            kill_group(pgid, grace_s=5.0)
            return 0
        time.sleep(GUARD_POLL_S)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
