"""The training clock: one agreed elapsed time per step, so ranks whose clocks differ still take every
time-based decision on the same step."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from paths import SUPPORT

from trainer.clock import TrainingClock

pytestmark = pytest.mark.slow  # starts Ray or torchrun processes


def test_clock_pauses_and_resumes():
    clock = TrainingClock(torch.device("cpu"))
    assert clock.elapsed_ms() == 0.0
    clock.start()
    torch.randn(256, 256) @ torch.randn(256, 256)
    clock.pause()
    paused = clock.elapsed_ms()
    assert paused > 0 and clock.elapsed_ms() == paused  # no time passes while paused
    clock.start()
    assert clock.elapsed_ms() >= paused
    assert clock.agreed_ms() >= paused  # one process: its own clock


def test_skewed_ranks_untie_on_the_same_step_under_a_wallclock_cap(tmp_path):
    """Rank 1's clock runs 3x fast; with a 4 s cap and untie at half of training, a local clock would
    untie rank 1 many steps before rank 0 and its DistAdam would then hold a parameter rank 0's lacks."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(SUPPORT / "clock_worker.py"), str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert proc.returncode == 0, (ranks, proc.stderr[-3000:])
    assert ranks[0]["untie_at"] is not None and ranks[0]["untie_at"] > 0
    assert ranks[0]["untie_at"] == ranks[1]["untie_at"]
    assert ranks[0]["steps"] == ranks[1]["steps"] > ranks[0]["untie_at"]
    evs = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    (untie,) = [e for e in evs if e["event"] == "untie"]
    final = evs[-1]
    assert final["event"] == "final" and final["status"] == "wallclock_cap"
    assert untie["step"] == ranks[0]["untie_at"]
    # The cap is read from the fast clock (the agreed maximum), so training stops near 4 s of it.
    assert final["train_time_ms"] < 4000
