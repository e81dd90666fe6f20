"""Learning-rate, momentum and untie schedules. Pure functions of values every rank agrees on."""
from __future__ import annotations


def lr_multiplier(step: int, iterations: int, warmdown_iters: int, elapsed_ms: float,
                  max_wallclock_ms: float) -> float:
    """Constant LR, then a linear decay to 0 over the last `warmdown_iters` steps.

    With a wallclock cap the warmdown is measured in estimated steps: once the time left is less than
    `warmdown_iters` steps at the current average step time, the multiplier is time_left / warmdown_time,
    reaching 0 at the cap (parameter-golf semantics).
    """
    if warmdown_iters <= 0:
        return 1.0
    if max_wallclock_ms <= 0:
        start = max(iterations - warmdown_iters, 0)
        return max((iterations - step) / warmdown_iters, 0.0) if step >= start else 1.0
    step_ms = elapsed_ms / max(step, 1)
    warmdown_ms = warmdown_iters * step_ms
    remaining_ms = max(max_wallclock_ms - elapsed_ms, 0.0)
    return remaining_ms / warmdown_ms if remaining_ms <= warmdown_ms else 1.0


def muon_momentum(step: int, start: float, end: float, warmup_steps: int) -> float:
    if warmup_steps <= 0:
        return end
    frac = min(step / warmup_steps, 1.0)
    return (1 - frac) * start + frac * end


def estimated_total_steps(step: int, iterations: int, elapsed_ms: float, max_wallclock_ms: float) -> float:
    """Steps the run will reach: the schedule length, or fewer when the wallclock cap comes first."""
    if max_wallclock_ms <= 0 or step == 0:
        return float(iterations)
    return min(float(iterations), max_wallclock_ms / (elapsed_ms / step))


def untie_due(step: int, untie_frac: float, total_steps: float) -> bool:
    """Untie before training step `step` once that fraction of training is done; 1.0 never unties."""
    return untie_frac < 1.0 and step >= untie_frac * total_steps


def progress(step: int, iterations: int, elapsed_ms: float, max_wallclock_ms: float) -> float:
    """Fraction of training done before step `step`: of the scheduled steps, or of the steps the
    wallclock cap will allow (the estimate the warmdown and the untie point use)."""
    return min(step / estimated_total_steps(step, iterations, elapsed_ms, max_wallclock_ms), 1.0)


def linear(start: float, end: float | None, frac: float) -> float:
    """`start` moved linearly toward `end` by `frac` of the way; no end = constant."""
    return start if end is None else start + (end - start) * frac
