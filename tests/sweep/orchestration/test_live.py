"""The live view's words and arithmetic (tests/test_sweep.py runs it: the progress board, a sweep's output)."""
from __future__ import annotations

import heapq
import io
import random
import re

import pytest
from rich.console import Console

from sweep.errors import InputError
from sweep.report.live_text import (
    EVERY_ENV,
    MODE_ENV,
    clock,
    display_settings,
    left_text,
    sweep_left,
    trial_left,
    trial_line,
)

NEWS = {"step": 120, "total_steps": 200, "train_loss": 3.81234, "val_loss": 3.90512, "step_avg_ms": 152.0}


def test_trial_line_and_time_left():
    assert trial_left(NEWS) == pytest.approx(80 * 0.152)
    assert trial_line("trial_0003", NEWS) == \
        "trial_0003  step 120/200  train_loss 3.8123  val_loss 3.9051  step_avg 152.0 ms  left 0:12"
    # Before its first validation, and before its first step.
    assert "val_loss -" in trial_line("trial_0003", {k: v for k, v in NEWS.items() if k != "val_loss"})
    assert trial_line("trial_0003", {}) == "trial_0003  starting"
    assert trial_left({"step": 3, "total_steps": 10}) is None
    assert [clock(s) for s in (0, 59.6, 61, 3599, 3600 * 2 + 61)] == ["0:00", "1:00", "1:01", "59:59", "2:01:01"]
    assert left_text(None) == "time left ?" and left_text(75) == "time left ~1:15"


def test_sweep_time_left():
    # Nothing ended and nothing running tells its time: unknown.
    assert sweep_left([], [(5.0, None)], pending=3, slots=2) is None
    # Two slots, trials of 100 s: the running ones end at 30 and 60, the three pending ones start as
    # slots free up (30 -> 130, 60 -> 160, 130 -> 230).
    assert sweep_left([100.0, 100.0], [(70.0, 30.0), (40.0, 60.0)], pending=3, slots=2) == pytest.approx(230)
    # A running trial that does not tell its time left is given the mean less what it has run.
    assert sweep_left([100.0], [(70.0, None)], pending=0, slots=2) == pytest.approx(30)
    # Before any trial ended, the running trials' projected durations stand in for the mean (50 s).
    assert sweep_left([], [(20.0, 30.0)], pending=2, slots=2) == pytest.approx(80)
    # A free slot starts a pending trial at once.
    assert sweep_left([10.0], [], pending=1, slots=4) == pytest.approx(10)


def _simulated_left(free: list[float], pending: int, mean: float) -> float:
    """The sweep's end by playing it out: each pending trial on the first slot to free up."""
    heapq.heapify(free)
    for _ in range(pending):
        heapq.heappush(free, heapq.heappop(free) + mean)
    return max(free)


def test_sweep_time_left_is_counted_not_simulated():
    rng = random.Random(7)
    for _ in range(2000):
        running = [(float(rng.randint(0, 100)), rng.choice([None, float(rng.randint(0, 300)), rng.uniform(0, 300)]))
                   for _ in range(rng.randint(0, 6))]
        durations = [float(rng.randint(1, 100)) for _ in range(rng.randint(1, 3))]
        pending, slots = rng.randint(0, 40), rng.randint(1, 6)
        mean = sum(durations) / len(durations)
        free = [left if left is not None else max(0.0, mean - ran) for ran, left in running]
        free += [0.0] * max(0, slots - len(free))
        assert sweep_left(durations, running, pending, slots) == pytest.approx(_simulated_left(free, pending, mean))
    # A pending count no loop would get through (what `--trials 99999999999999999999` once hung on).
    assert sweep_left([10.0], [(5.0, 5.0)], pending=10**20, slots=4) == pytest.approx(5.0 + 10**20 / 4 * 10.0)


def test_display_settings(monkeypatch):
    monkeypatch.setenv(MODE_ENV, "plain")
    monkeypatch.setenv(EVERY_ENV, "5")
    assert display_settings() == ("plain", 5.0)
    monkeypatch.setenv(EVERY_ENV, "0")
    with pytest.raises(InputError, match=EVERY_ENV):
        display_settings()
    monkeypatch.setenv(MODE_ENV, "fancy")
    with pytest.raises(InputError, match=MODE_ENV):
        display_settings()


def test_the_terminal_table_holds_each_running_trial():
    from sweep.orchestration.live import running_table

    console = Console(file=io.StringIO(), width=120)
    console.print(running_table([("trial_0003", NEWS), ("trial_0004", None)]))
    text = console.file.getvalue()
    assert re.search(r"trial_0003\s+120/200\s+3\.8123\s+3\.9051\s+152\.0 ms\s+0:12", text), text
    assert re.search(r"trial_0004\s+starting", text), text


def test_a_view_saved_before_it_had_a_board_still_shows_the_summary(monkeypatch, capsys):
    from sweep.orchestration.live import LiveView

    monkeypatch.setenv(MODE_ENV, "plain")
    old = object.__new__(LiveView)  # what unpickling a copy saved by an older version gives
    old.__dict__.update(metric="val_loss", mode="min", total=3, _start=0.0, _last="")
    old.setup()
    old.on_step_end(0, [])
    old.on_experiment_end([])
    assert re.search(r"^\[\s*0:00\] 3 trials: 0 running, 0 done, 0 pruned, 0 failed, 3 pending \| time left \?$",
                     capsys.readouterr().out, re.M)
