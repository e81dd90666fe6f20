"""Wall time of the README's first command, the embedded default sweep, on this machine.

    python bench/bench_default_sweep.py

Runs `sweep run` with no arguments in a fresh temporary folder (the generated corpus is built first, as
it is cached after a user's first run), times it from launch to its first line (what it checks) and to
exit, and saves the figures with the sweep's leaderboard to bench/results/default_sweep.json. Targets on a
2-core machine: the first line within 1 s, the sweep under 3 minutes.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from runs import machine, save


def main() -> None:
    subprocess.run([sys.executable, "-m", "trainer", "data", "generate", "--vocab-size", "512"], check=True,
                   capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = subprocess.Popen([shutil.which("sweep") or "sweep", "run"], cwd=tmp, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=os.environ.copy())
        first = proc.stderr.readline()   # the line saying what it checks, before its slow imports
        first_s = time.perf_counter() - t0
        stdout, stderr = proc.communicate(timeout=3600)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep run exited {proc.returncode}:\n{stdout[-3000:]}\n{first}{stderr[-3000:]}")
    board = [line for line in stdout.splitlines() if line.startswith(("rank", "best:")) or line[:1].isdigit()]
    save("default_sweep", {"bench": "default_sweep", **machine(), "cpu_count": os.cpu_count(),
                           "first_line_s": first_s, "first_line": first.rstrip(), "wall_s": wall, "leaderboard": board})


if __name__ == "__main__":
    main()
