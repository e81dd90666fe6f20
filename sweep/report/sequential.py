"""The design of a sequential confirmation (`sweep run --confirm`, `sweep verify`): when the seeds run so far
decide whether a configuration beats its baseline (or a claim its target), and the p-value corrected for
having looked after every round. Why this design: docs/confirmation.md, "Sequential confirmation".

A configuration is looked at after each round, with n seeds of at most `max_seeds` (N):

- The test at a look is the one-sided t-test of the per-seed improvements over the baseline (paired
  seeds), of the margins below the target (`sweep verify`), or Welch's test of two unpaired samples;
  `p` is its naive one-sided p-value.
- Efficacy: the design spends alpha as `alpha * (n / N) ** 3` (the Kim-DeMets power family with rho = 3,
  close to O'Brien-Fleming: almost nothing is spent on the first seeds, so the last look keeps nearly
  the fixed test's threshold). A look crosses when `p` is at or below the look's nominal level: the
  level at which the chance, under no improvement, of crossing there without having crossed before is
  what the look spends. The t-statistics of one sample at n = 2, 3, ... seeds form a Markov chain whose
  law does not depend on the unknown std (`_NullChain`), so the levels are the t-test's own (up to the
  chain's grid), not a normal approximation (which lets the type-I error grow by 10-30% at these seeds).
- Futility: the same construction tests "the improvement is `min_effect`" against "it is smaller",
  spending beta = 1 - power as `beta * (n / N) ** 2`; a crossing makes an improvement of `min_effect`
  implausible, and stops the configuration as not better. The futility bound is non-binding: the
  efficacy levels ignore it, so the type-I error stays within alpha whatever the futility rule did.
- The sequential p-value of a configuration is the smallest alpha at which the design would have
  crossed at some look so far (a repeated p-value); it is a valid p-value however the looks stopped.
- Several configurations against one baseline: Holm's step-down on the sequential p-values (the closure of
  Bonferroni-split designs, each at alpha / m), so the family-wise error stays within alpha; a
  configuration is better when its Holm-adjusted p-value is at most alpha.
- At N seeds a configuration that crossed nothing is inconclusive.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import optimize, special
from scipy import stats as _scipy_stats

from sweep.report import stats

ALPHA = stats.RECORD_ALPHA
POWER = 0.8
EFFICACY_RHO = 3.0     # alpha * (n / N) ** 3
FUTILITY_RHO = 2.0     # beta * (n / N) ** 2
FIRST_LOOK = 2         # a t-test needs two seeds
GRID = 400             # cells of the chain's state: every level within 1% of 3000 cells' (0.3% with 800)
RUNNING, BETTER, NOT_BETTER, INCONCLUSIVE = 0, 1, 2, 3      # a configuration's state, as numpy arrays hold it
VERDICTS = ("running", "better", "not better", "inconclusive")


def spent(level: float, seeds: int, max_seeds: int, rho: float) -> float:
    """What the design has spent of `level` once `seeds` of `max_seeds` have been looked at."""
    return level * min(1.0, seeds / max_seeds) ** rho


class _NullChain:
    """The law of the one-sample t-statistics of n = 1, 2, 3, ... draws of a normal with mean 0 and any std.

    With R_n the norm of the first n draws and zeta_n = (their sum) / (sqrt(n) R_n), the t-statistic is
    T_n = sqrt(n - 1) zeta_n / sqrt(1 - zeta_n^2), and the next draw x moves zeta to
    (sqrt(n) zeta + w) / sqrt((n + 1) (1 + w^2)) with w = x / R_n, which is independent of the path so far
    (the norm of a normal vector is independent of its direction) and distributed as t_n / sqrt(n). So
    zeta is a Markov chain free of the std. Its state is held as the angle theta = asin(zeta), whose
    density is smooth (cos^(n-2)): the masses of GRID cells of (-pi/2, pi/2), each at its cell's center.
    The cells are finer towards +-pi/2, where the bounds of the first looks lie (a level of 1e-5 at 3 seeds
    is within 0.007 of pi/2) and the paths that cross them come from."""

    def __init__(self, cells: int = GRID):
        self.edges = math.pi / 2 * np.sin(math.pi / 2 * np.linspace(-1.0, 1.0, cells + 1))
        self.centers = (self.edges[:-1] + self.edges[1:]) / 2
        self.edge_zeta = np.sin(self.edges)

    @staticmethod
    def _w_below(angle, n: int):
        """P(atan(w) <= angle) for w = t_n / sqrt(n)."""
        inside = np.clip(angle, -math.pi / 2, math.pi / 2)
        return special.stdtr(n, math.sqrt(n) * np.tan(inside))

    @classmethod
    def step_cdf(cls, zeta_next, theta, n: int):
        """P(zeta_{n+1} <= zeta_next | zeta_n = sin(theta)), broadcasting. The next zeta is
        sqrt((1 + a^2) / (n + 1)) cos(psi) with a = sqrt(n) zeta_n and psi the angle between (a, 1) and
        (1, w): it is at most zeta_next when psi lies in [g, 2 pi - g], g = acos(...)."""
        a = math.sqrt(n) * np.sin(theta)
        g = np.arccos(np.clip(zeta_next * math.sqrt(n + 1) / np.sqrt(1 + a * a), -1.0, 1.0))
        b = np.arctan2(1.0, a)
        return cls._w_below(b - g, n) - cls._w_below(b - 2 * math.pi + g, n) + 1 - cls._w_below(b + g, n)

    @lru_cache(maxsize=128)
    def _cdf_matrix(self, n: int) -> np.ndarray:
        """From each cell's center at n draws, the chance of ending at or below each edge at n + 1."""
        out = self.step_cdf(self.edge_zeta[None, :], self.centers[:, None], n)
        out[:, 0], out[:, -1] = 0.0, 1.0
        return out

    def advance(self, theta: np.ndarray, mass: np.ndarray, n: int, below: float = 1.0) -> np.ndarray:
        """The cells' masses at n + 1 draws, of the paths with zeta at or below `below` there."""
        if theta is self.centers:
            cdf = self._cdf_matrix(n)
        else:
            cdf = self.step_cdf(self.edge_zeta[None, :], theta[:, None], n)
            cdf[:, 0], cdf[:, -1] = 0.0, 1.0
        if below < 1.0:
            cut = int(np.searchsorted(self.edge_zeta, below, side="right"))
            cdf = cdf[:, :cut + 1].copy()
            cdf[:, cut] = self.step_cdf(below, theta, n)
        out = np.zeros(len(self.centers))
        moved = mass @ np.diff(cdf, axis=1)
        out[:len(moved)] = moved
        return out


_CHAIN = _NullChain()


def _zeta_to_t(zeta: float, n: int) -> float:
    if zeta >= 1.0:
        return math.inf
    return math.sqrt(n - 1) * zeta / math.sqrt(1.0 - zeta * zeta)


@lru_cache(maxsize=8192)
def nominal_levels(level: float, looks: tuple[int, ...], max_seeds: int, rho: float) -> tuple[float, ...]:
    """The one-sided nominal p-value at or below which the t-test with `looks[k]` seeds crosses the
    boundary of the design spending `level` as `level * (n / max_seeds) ** rho` (0: nothing is spent)."""
    if any(n < FIRST_LOOK for n in looks) or list(looks) != sorted(set(looks)):
        raise ValueError(f"looks must be increasing sample sizes of at least {FIRST_LOOK}, got {looks}")
    theta, mass, n = np.array([-math.pi / 2, math.pi / 2]), np.array([0.5, 0.5]), 1   # one draw: zeta = +-1
    levels, before = [], 0.0
    for look in looks:
        while n < look - 1:
            mass, theta, n = _CHAIN.advance(theta, mass, n), _CHAIN.centers, n + 1
        spend = spent(level, look, max_seeds, rho) - before
        beyond = float(mass.sum())          # what crosses at zeta = -1: every path still going

        def crossing(zeta: float) -> float:
            return float(mass @ (1.0 - _CHAIN.step_cdf(zeta, theta, n))) - spend

        if spend <= 0.0:
            zeta = 1.0
        elif beyond <= spend:
            zeta = -1.0
        elif not levels:        # nothing crossed before: the t-test's own level, exactly
            bound = float(special.stdtrit(look - 1, 1.0 - spend))
            zeta = bound / math.sqrt(look - 1 + bound * bound)
        else:
            zeta = optimize.brentq(crossing, -1.0, 1.0, xtol=1e-14, rtol=1e-12)
        levels.append(float(special.stdtr(look - 1, -_zeta_to_t(zeta, look))) if zeta > -1.0 else 1.0)
        mass, theta, n = _CHAIN.advance(theta, mass, n, below=zeta), _CHAIN.centers, look
        before += spend
    return tuple(levels)


def sequential_p(p_values: Sequence[float], looks: Sequence[int], max_seeds: int, rho: float = EFFICACY_RHO) -> float:
    """The repeated p-value: the smallest alpha at which the design (spending alpha as `alpha * (n /
    max_seeds) ** rho`) would have crossed at one of the looks so far, given each look's naive p-value."""
    looks = tuple(looks)
    if not looks:
        return 1.0
    low = min(p_values)
    if low <= 0.0:
        return 0.0

    def crossed(level: float) -> bool:
        return any(p <= bound for p, bound in zip(p_values, nominal_levels(level, looks, max_seeds, rho)))

    if not crossed(1.0):
        return 1.0
    # Every nominal level is below the level itself, so nothing crosses at `low`.
    lo, hi = math.log(low), 0.0
    while hi - lo > 1e-7:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if crossed(math.exp(mid)) else (mid, hi)
    return math.exp(hi)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: sorted ascending, max over j <= i of (m - j + 1) p_(j), capped at 1."""
    m = len(p_values)
    out, running = [0.0] * m, 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        out[index] = running
    return out


def holm_levels(alpha: float, hypotheses: int) -> list[float]:
    """The levels Holm's steps test at: alpha / m, alpha / (m - 1), ..., alpha."""
    return [alpha / (hypotheses - i) for i in range(hypotheses)]


def holm_better(crossed: np.ndarray) -> np.ndarray:
    """Which hypotheses Holm's step-down rejects, from `crossed[..., j, i]`: hypothesis j's design at the
    level `holm_levels(alpha, m)[i]` has crossed at some look. Whatever crosses at a step's level is
    rejected there (in sorted order each would pass its own, larger, level), and the next step tests the
    rest at the level of as many hypotheses as remain."""
    crossed = np.asarray(crossed, dtype=bool)
    m = crossed.shape[-1]
    rejected = np.zeros(crossed.shape[:-1], dtype=bool)
    for _ in range(m):
        count = rejected.sum(axis=-1, keepdims=True)
        level = np.take_along_axis(crossed, np.minimum(count, m - 1)[..., None], axis=-1)[..., 0]
        rejected |= level & (count < m)
    return rejected


def round_verdicts(state: np.ndarray, crossed: np.ndarray, futile: np.ndarray, at_max: np.ndarray) -> np.ndarray:
    """The states after a round's looks (integer arrays of `RUNNING`, `BETTER`, ... over configurations, last
    axis): better when Holm rejects (also a configuration stopped before, once others' rejections pass their
    alpha on), else a running one stops as not better on its futility bound, as inconclusive at its last seed."""
    better = holm_better(crossed)
    out = np.array(state, dtype=np.int8)
    running = out == RUNNING
    out[running & futile & ~better] = NOT_BETTER
    out[running & at_max & ~better & ~futile] = INCONCLUSIVE
    out[better] = BETTER
    return out


@dataclass(frozen=True)
class Design:
    """One sequential confirmation: `hypotheses` configurations (or one claim), each on at most `max_seeds`
    seeds, `min_effect` the improvement of interest (None: no futility stop), in the metric's units."""
    max_seeds: int
    min_effect: float | None
    alpha: float = ALPHA
    power: float = POWER
    hypotheses: int = 1

    def efficacy_levels(self, looks: tuple[int, ...]) -> list[tuple[float, ...]]:
        """Per Holm level (alpha / m first), the nominal level of each look."""
        return [nominal_levels(level, looks, self.max_seeds, EFFICACY_RHO)
                for level in holm_levels(self.alpha, self.hypotheses)]

    def futility_levels(self, looks: tuple[int, ...]) -> tuple[float, ...]:
        if self.min_effect is None:
            return (0.0,) * len(looks)
        return nominal_levels(1.0 - self.power, looks, self.max_seeds, FUTILITY_RHO)

    def final_bounds(self, seeds: int) -> tuple[float, float]:
        """The t-quantiles the efficacy and futility tests reach at the last look when every earlier one
        was taken, with alpha / m: their sum times std / sqrt(N) is the smallest improvement the design
        is sure to decide on (the sequential counterpart of (t_{1-alpha} + t_{power}) std / sqrt(n))."""
        looks = tuple(range(FIRST_LOOK, seeds + 1))
        efficacy = nominal_levels(self.alpha / self.hypotheses, looks, seeds, EFFICACY_RHO)[-1]
        futility = nominal_levels(1.0 - self.power, looks, seeds, FUTILITY_RHO)[-1]
        return float(_scipy_stats.t.isf(efficacy, seeds - 1)), float(_scipy_stats.t.isf(futility, seeds - 1))

    def decisive_difference(self, std: float) -> float:
        """The smallest true improvement at which the design, with the std of the differences `std`, runs
        out of seeds only by chance (its efficacy and futility bounds meet at the last seed)."""
        efficacy, futility = self.final_bounds(self.max_seeds)
        return (efficacy + futility) * std / math.sqrt(self.max_seeds)


def planned_seeds(effect: float, std: float, alpha: float = ALPHA, power: float = POWER, hypotheses: int = 1,
                  limit: int = 200) -> int:
    """The smallest maximum of seeds at which the design decides an improvement of `effect` (differences of
    std `std`): its efficacy and futility bounds meet at the last seed."""
    # The final bounds are at least the fixed test's quantiles, so no maximum below the fixed formula's decides.
    start = next((n for n in range(2, limit + 1)
                  if stats.detectable_difference(std / math.sqrt(2.0), n, alpha / hypotheses, power) <= effect), limit)
    for seeds in range(max(3, start), limit + 1):
        design = Design(seeds, effect, alpha, power, hypotheses)
        if design.decisive_difference(std) <= effect:
            return seeds
    raise ValueError(f"an effect of {effect:g} at std {std:g} needs more than {limit} seeds")


def fixed_seeds(effect: float, std: float, alpha: float = ALPHA, power: float = POWER, limit: int = 10_000) -> int:
    """The seeds a fixed design needs: the smallest n at which the one-sided one-sample t-test at level alpha
    finds a true improvement `effect` of differences of std `std` with the given power (noncentral t)."""
    for n in range(2, limit + 1):
        critical = _scipy_stats.t.isf(alpha, n - 1)
        if _scipy_stats.nct.sf(critical, n - 1, effect * math.sqrt(n) / std) >= power:
            return n
    raise ValueError(f"an effect of {effect:g} at std {std:g} needs more than {limit} seeds")


@dataclass(frozen=True)
class Sample:
    """What one hypothesis has after a round, oriented so that larger is better: the per-seed improvements
    over the baseline (paired seeds) or margins below a target (one sample); or, unpaired, the
    configuration's own values with the baseline's in `baseline` (Welch's test)."""
    values: tuple[float, ...]
    baseline: tuple[float, ...] | None = None

    @property
    def seeds(self) -> int:
        return len(self.values) if self.baseline is None else min(len(self.values), len(self.baseline))

    def p(self) -> float:
        """The naive one-sided p-value of an improvement above 0."""
        if self.baseline is None:
            return stats.one_sided_ttest([-v for v in self.values], 0.0)
        return stats.welch_test(self.values, self.baseline, 0.0, "greater")

    def p_futility(self, min_effect: float) -> float:
        """The naive one-sided p-value of an improvement below `min_effect`."""
        if self.baseline is None:
            return stats.one_sided_ttest(self.values, min_effect)
        return stats.welch_test(self.values, self.baseline, min_effect, "less")


@dataclass
class Course:
    """One hypothesis through the rounds: the seeds and naive p-value of each look, the Holm levels it has
    crossed, and how and in which round it stopped."""
    crossed: list[bool]
    looks: list[int] = field(default_factory=list)
    p_values: list[float] = field(default_factory=list)
    state: int = RUNNING
    stopped: int | None = None

    @property
    def verdict(self) -> str:
        return VERDICTS[self.state]


class Rounds:
    """A sequential confirmation's rounds: after each, `add` takes what the running hypotheses have, looks
    at each, and stops those decided (`round_verdicts`)."""

    def __init__(self, design: Design):
        self.design = design
        self.round = 0
        self.courses = [Course([False] * design.hypotheses) for _ in range(design.hypotheses)]

    @property
    def running(self) -> list[int]:
        return [j for j, course in enumerate(self.courses) if course.state == RUNNING]

    def add(self, samples: dict[int, Sample], last: bool) -> None:
        """Look at the running hypotheses' `samples` (one without a new seed is not looked at again); `last`:
        the round that reached the maximum of seeds."""
        self.round += 1
        futile = np.zeros(len(self.courses), dtype=bool)
        for j, sample in samples.items():
            course = self.courses[j]
            if course.state != RUNNING or sample.seeds < FIRST_LOOK or course.looks[-1:] >= [sample.seeds]:
                continue
            course.looks.append(sample.seeds)
            course.p_values.append(sample.p())
            looks = tuple(course.looks)
            for i, levels in enumerate(self.design.efficacy_levels(looks)):
                course.crossed[i] = course.crossed[i] or course.p_values[-1] <= levels[-1]
            if self.design.min_effect is not None:
                futile[j] = sample.p_futility(self.design.min_effect) <= self.design.futility_levels(looks)[-1]
        states = round_verdicts(np.array([c.state for c in self.courses]),
                                np.array([c.crossed for c in self.courses]), futile,
                                np.full(len(self.courses), last))
        for course, state in zip(self.courses, states):
            if course.state == RUNNING and state != RUNNING:
                course.stopped = self.round
            course.state = int(state)

    def sequential_p(self) -> list[float]:
        """Each hypothesis's repeated p-value over its looks."""
        return [sequential_p(c.p_values, c.looks, self.design.max_seeds) for c in self.courses]

    def adjusted_p(self) -> list[float]:
        """The Holm-adjusted sequential p-values: a hypothesis is better when its value is at most alpha."""
        return holm(self.sequential_p())
