"""The sequential confirmation's design (sweep.report.sequential): its stopping rules on hand-made per-seed
values, its levels and adjusted p-values against direct computations from their definitions (a
numerical integral over the data of three seeds; raw normal data simulated), Holm's rule."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from scipy import integrate, optimize

from sweep.report import sequential as sq
from sweep.report import stats
from sweep.report.sequential import Design, Rounds, Sample

WINNER = [0.0101, 0.0099, 0.0100, 0.0102, 0.0098, 0.0101, 0.0100, 0.0099]      # improves by 0.01 every seed
LOSER = [-0.0080, -0.0076, -0.0083, -0.0079, -0.0081, -0.0078, -0.0080, -0.0082]
TIE = [0.010, -0.010, 0.012, -0.011, 0.009, -0.008, 0.011, -0.012]             # no change, much noise


def run_rounds(design: Design, samples) -> Rounds:
    """The rounds of a confirmation on seeds 1..N: round r looks at the first r + 1 values."""
    rounds = Rounds(design)
    for number in range(1, design.max_seeds):
        if not rounds.running:
            break
        rounds.add({j: samples(j, number + 1) for j in rounds.running}, last=number == design.max_seeds - 1)
    return rounds


def test_a_clear_winner_stops_early_as_better_a_loser_as_not_better_and_a_tie_runs_to_the_maximum():
    values = [WINNER, LOSER, TIE]
    rounds = run_rounds(Design(8, 0.002, hypotheses=3), lambda j, n: Sample(tuple(values[j][:n])))
    winner, loser, tie = rounds.courses
    assert (winner.verdict, winner.stopped, winner.looks) == ("better", 2, [2, 3])
    assert (loser.verdict, loser.stopped, loser.looks) == ("not better", 1, [2])
    assert (tie.verdict, tie.stopped, tie.looks) == ("inconclusive", 7, list(range(2, 9)))
    adjusted = rounds.adjusted_p()
    assert adjusted[0] <= 0.01 < adjusted[2]
    assert adjusted == pytest.approx(sq.holm(rounds.sequential_p()))


def test_unpaired_repeats_stop_the_same_way_with_welchs_test():
    rng = np.random.default_rng(3)
    base = list(4.0 + 0.0005 * rng.standard_normal(8))
    good = [x + 0.01 for x in 4.0 + 0.0005 * rng.standard_normal(8)]   # 0.01 better, unpaired
    bad = list(4.0 - 0.01 + 0.0005 * rng.standard_normal(8))
    values = [good, bad]
    rounds = run_rounds(Design(8, 0.002, hypotheses=2),
                        lambda j, n: Sample(tuple(values[j][:n]), tuple(base[:n])))
    assert [c.verdict for c in rounds.courses] == ["better", "not better"]
    assert rounds.courses[0].stopped <= 3 and rounds.courses[1].stopped <= 2
    first = rounds.courses[0]
    n = first.looks[-1]
    assert first.p_values[-1] == pytest.approx(
        scipy.stats.ttest_ind(good[:n], base[:n], equal_var=False, alternative="greater").pvalue, rel=1e-12)


def test_without_a_min_effect_nothing_stops_for_futility():
    rounds = run_rounds(Design(5, None), lambda j, n: Sample(tuple(LOSER[:n])))
    assert (rounds.courses[0].verdict, rounds.courses[0].stopped) == ("inconclusive", 4)


def _first_two_looks(a: float, b: float) -> float:
    """P(T_2 < a, T_3 >= b) for the one-sample t-statistics of 2 and 3 draws of N(0, 1), integrated directly:
    in Helmert coordinates h0 = sum / sqrt(3), (h1, h2) = r (cos phi, sin phi), T_3 = sqrt(2) u and
    T_2 = (2 sqrt(3) u + sqrt(6) sin phi) / (3 sqrt(2) |cos phi|) with u = h0 / r (sqrt(2) u ~ t_2) and phi
    uniform, independent of u."""
    def u_cdf(x: float) -> float:
        return scipy.stats.t.cdf(math.sqrt(2.0) * x, 2)

    def inner(phi: float) -> float:
        top = (3 * math.sqrt(2.0) * a * abs(math.cos(phi)) - math.sqrt(6.0) * math.sin(phi)) / (2 * math.sqrt(3.0))
        return max(0.0, u_cdf(top) - u_cdf(b / math.sqrt(2.0)))

    kinks = [math.pi / 2, 3 * math.pi / 2]
    return integrate.quad(inner, 0.0, 2 * math.pi, points=kinks, limit=400, epsabs=1e-13, epsrel=1e-11)[0] / (2 * math.pi)


def test_the_adjusted_p_value_is_the_designs_repeated_p_value_computed_directly():
    # Three seeds at most, looks after 2 and 3. The design spends alpha (2/3)^3 at the first look and the
    # rest at the second; the repeated p-value is the smallest alpha whose boundaries the data cross.
    spend2 = (2 / 3) ** 3
    values = {"strong": [0.0031, 0.0012, 0.0027], "weak": [0.0022, 0.0004, 0.0019]}
    direct = {}
    for name, xs in values.items():
        p2 = stats.one_sided_ttest([-x for x in xs[:2]], 0.0)
        t3 = scipy.stats.ttest_1samp(xs, 0.0).statistic

        def second_look(level: float) -> float:   # crossing at look 2 at `level`, less what the design spends there
            a = scipy.stats.t.isf(level * spend2, 1)
            return _first_two_looks(a, t3) - level * (1 - spend2)

        at_three = optimize.brentq(second_look, 1e-6, 0.999, xtol=1e-12)
        assert at_three < p2 / spend2                  # the second look decides these
        direct[name] = min(p2 / spend2, at_three)
        rounds = run_rounds(Design(3, None), lambda j, n: Sample(tuple(xs[:n])))
        assert rounds.courses[0].looks == [2, 3]
        assert rounds.sequential_p()[0] == pytest.approx(direct[name], rel=1e-3)
    both = run_rounds(Design(3, None, hypotheses=2), lambda j, n: Sample(tuple(list(values.values())[j][:n])))
    low, high = sorted(direct.values())
    expected = [min(1.0, 2 * low), max(min(1.0, 2 * low), high)]  # Holm, by hand
    assert sorted(both.adjusted_p()) == pytest.approx(expected, rel=1e-3)


def test_the_levels_spend_alpha_as_designed_on_simulated_normal_data():
    looks, top, level = (2, 3, 4, 6, 8), 8, 0.05
    nominal = sq.nominal_levels(level, looks, top, sq.EFFICACY_RHO)
    x = np.random.default_rng(0).standard_normal((1_000_000, top)) * 3.7   # any std: the t-test does not care
    sums, squares = np.cumsum(x, 1), np.cumsum(x * x, 1)
    alive, crossed = np.ones(len(x), dtype=bool), 0.0
    for n, bound in zip(looks, nominal):
        mean = sums[:, n - 1] / n
        t = mean / np.sqrt((squares[:, n - 1] - n * mean * mean) / (n - 1) / n)
        now = alive & (scipy.stats.t.sf(t, n - 1) <= bound)
        crossed += now.mean()
        alive &= ~now
        target = sq.spent(level, n, top, sq.EFFICACY_RHO)
        assert abs(crossed - target) < 5 * math.sqrt(target / len(x)), n
    assert nominal[0] == pytest.approx(level * (2 / 8) ** 3, rel=1e-9)   # the first look: the t-test's own level


def test_holms_rule_on_crossings_is_holm_on_p_values():
    rng = np.random.default_rng(1)
    for _ in range(300):
        m = int(rng.integers(1, 5))
        p = list(rng.uniform(0, 0.03, m) ** 2 * 30)
        crossed = np.array([[pj <= level for level in sq.holm_levels(0.01, m)] for pj in p])
        assert list(sq.holm_better(crossed)) == [q <= 0.01 for q in sq.holm(p)]
    assert sq.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_the_planned_maximum_decides_the_effect_and_the_fixed_design_has_its_power():
    std, effect = 0.0015 * math.sqrt(2), 0.002
    n = sq.planned_seeds(effect, std)
    assert Design(n, effect).decisive_difference(std) <= effect < Design(n - 1, effect).decisive_difference(std)
    fixed = sq.fixed_seeds(effect, std)
    power = scipy.stats.nct.sf(scipy.stats.t.isf(0.01, fixed - 1), fixed - 1, effect * math.sqrt(fixed) / std)
    assert power >= 0.8 > scipy.stats.nct.sf(scipy.stats.t.isf(0.01, fixed - 2), fixed - 2,
                                             effect * math.sqrt(fixed - 1) / std)


def test_welch_test_follows_scipy():
    a, b = [4.01, 4.03, 4.02, 4.05], [4.06, 4.04, 4.07]
    assert stats.welch_test(a, b, 0.0, "less") == pytest.approx(
        scipy.stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue, rel=1e-12)
    assert stats.welch_test(a, b, -0.02, "greater") == pytest.approx(
        scipy.stats.ttest_ind([x + 0.02 for x in a], b, equal_var=False, alternative="greater").pvalue, rel=1e-12)
    assert stats.welch_test([1.0, 1.0], [2.0, 2.0], 0.0, "less") == 0.0
    assert stats.welch_test([1.0, 1.0], [2.0, 2.0], 0.0, "greater") == 1.0
