"""What the live view says, and how it is asked to say it: clock times, a running trial's numbers, the
time a trial and the sweep have left. Standard library only, so the commands check the settings before
Ray is imported.

    [  1:23] 6 trials: 2 running, 3 done, 1 pruned, 0 failed, 0 pending | best val_loss 4.81234 (trial_0002) | time left ~0:40
    [  1:23]   trial_0004  step 120/200  train_loss 3.8123  val_loss 3.9051  step_avg 152.0 ms  left 0:12
"""
from __future__ import annotations

import math
import os
import sys
from typing import Any

from sweep.errors import InputError

MODE_ENV = "SWEEP_PROGRESS"            # plain | live
EVERY_ENV = "SWEEP_PROGRESS_EVERY"     # seconds between the plain blocks of trial lines
DISPLAY_MODES = ("plain", "live")
DEFAULT_EVERY_S = 30.0


def display_settings() -> tuple[str, float]:
    """(mode, seconds between plain blocks): live on a terminal, plain lines otherwise (CI, `ray job
    logs`, a pipe), unless the environment says which."""
    mode = os.environ.get(MODE_ENV) or ("live" if sys.stdout.isatty() else "plain")
    if mode not in DISPLAY_MODES:
        raise InputError(MODE_ENV, f"expected one of {', '.join(DISPLAY_MODES)}, got {mode!r}")
    raw = os.environ.get(EVERY_ENV) or str(DEFAULT_EVERY_S)
    try:
        every = float(raw)
    except ValueError:
        every = math.nan
    if not every > 0:
        raise InputError(EVERY_ENV, f"expected a number of seconds above 0, got {raw!r}")
    return mode, every


def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    s = max(0, round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def stamp(elapsed: float) -> str:
    s = int(elapsed)
    return f"[{s // 60:3d}:{s % 60:02d}]"


def trial_left(news: dict[str, Any] | None) -> float | None:
    """Seconds of training a trial has left at its step time, once it has told both."""
    news = news or {}
    step, total, step_ms = news.get("step"), news.get("total_steps"), news.get("step_avg_ms")
    if not all(isinstance(v, (int, float)) for v in (step, total, step_ms)):
        return None
    return max(0, total - step) * step_ms / 1000.0


def sweep_left(durations: list[float], running: list[tuple[float, float | None]], pending: int,
               slots: int) -> float | None:
    """Seconds until the sweep's last trial ends, or None before there is anything to go by.

    `durations`: the trials that ended (done or pruned) so far; `running`: (seconds since it started,
    seconds it has left or None) of each running trial; `pending` trials each take the mean duration, on
    the first of `slots` trial slots to free up. Without an ended trial, the running trials that tell
    their time left stand in for the mean (what they have run plus what they have left)."""
    known = durations or [elapsed + left for elapsed, left in running if left is not None]
    if not known:
        return None
    mean = sum(known) / len(known)
    free = sorted([left if left is not None else max(0.0, mean - elapsed) for elapsed, left in running]
                  + [0.0] * max(0, max(1, slots) - len(running)))
    if not pending or mean <= 0:
        return free[-1]
    return max(free[-1], _last_start(free, pending, mean) + mean)


def _starts_before(free: list[float], t: float, mean: float) -> int:
    """How many trials start before time `t` when each slot, free from `free[i]` on, runs one of `mean`
    seconds after another."""
    return sum(math.ceil((t - f) / mean) for f in free if f < t)


def _last_start(free: list[float], pending: int, mean: float) -> float:
    """When the last of `pending` trials of `mean` seconds starts, each on the first slot to free up: the
    `pending`-th smallest of {free[i] + k * mean}. Counted, not simulated, so a sweep of any size takes the
    same time: in the stretch between two slots' free times the slots already free start trials in a
    repeating order, one each per `mean` seconds."""
    lo, hi = 0, len(free) - 1   # the last slot whose free time comes before the `pending`-th start
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _starts_before(free, free[mid], mean) < pending:
            lo = mid
        else:
            hi = mid - 1
    active = free[:lo + 1]
    rank = pending - 1 - _starts_before(free, free[lo], mean)   # 0-based among the starts from free[lo] on
    firsts = sorted(f + math.ceil((free[lo] - f) / mean) * mean for f in active)
    rounds, index = divmod(rank, len(active))
    return firsts[index] + rounds * mean


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def trial_cells(news: dict[str, Any] | None) -> list[tuple[str, str]]:
    """A running trial's numbers as (name, text) pairs; none before its first step."""
    if not news or "step" not in news:
        return []
    total = news.get("total_steps")
    left = trial_left(news)
    return [("step", f"{news['step']}/{total if total is not None else '?'}"),
            ("train_loss", _number(news.get("train_loss"), ".4f")),
            ("val_loss", _number(news.get("val_loss"), ".4f")),
            ("step_avg", _number(news.get("step_avg_ms"), ".1f") + " ms"),
            ("left", "?" if left is None else clock(left))]


def trial_line(label: str, news: dict[str, Any] | None) -> str:
    cells = trial_cells(news)
    return f"{label}  " + ("  ".join(f"{name} {text}" for name, text in cells) if cells else "starting")


def left_text(seconds: float | None) -> str:
    return "time left ?" if seconds is None else f"time left ~{clock(seconds)}"
