"""The confirmed leaderboard when the runs cannot be paired: repeats of a script with no seed (source mode
without a seed site) are compared by the difference of the means and Welch's t-test, and the report says
the runs are unpaired; with seeds the design stays paired."""
from __future__ import annotations

import pytest
import scipy.stats

from sweep.inputs.objective import Objective
from sweep.report import stats
from sweep.report.confirm_report import ConfirmedConfig, build_report, markdown
from sweep.report.verify_claim import SeedResult

BASE = [3.2801, 3.2779, 3.2795, 3.2788]
BETTER = [3.2741, 3.2752, 3.2739, 3.2760]


def configs(*losses: list[float]) -> list[ConfirmedConfig]:
    return [ConfirmedConfig(trial, {"CastedLinearT.w_s": 0.003 + trial / 1000},
                            [SeedResult(i + 1, f"r{trial}{i}", "ok", loss, 80.0) for i, loss in enumerate(values)])
            for trial, values in enumerate(losses)]


def test_welch_test_follows_scipy_and_answers_groups_without_spread():
    assert stats.welch_test(BETTER, BASE, 0.0, "less") == pytest.approx(
        scipy.stats.ttest_ind(BETTER, BASE, equal_var=False, alternative="less").pvalue)
    assert stats.welch_test(BETTER, BASE, 0.0, "greater") == pytest.approx(
        scipy.stats.ttest_ind(BETTER, BASE, equal_var=False, alternative="greater").pvalue)
    assert stats.welch_test([3.0, 3.0], [3.1, 3.1], 0.0, "less") == 0.0
    assert stats.welch_test([3.1, 3.1], [3.1, 3.1], 0.0, "less") == 1.0
    # Unequal group sizes are fine unpaired (a repeat that crashed leaves its configuration one short).
    assert stats.welch_test(BETTER[:3], BASE, 0.0, "less") == pytest.approx(
        scipy.stats.ttest_ind(BETTER[:3], BASE, equal_var=False, alternative="less").pvalue)


def test_an_unpaired_report_tests_the_means_with_welch_and_says_the_runs_are_unpaired():
    report = build_report(configs(BASE, BETTER), Objective("val_loss"), [1, 2, 3, 4], paired=False)
    line = report.lines[1]
    assert line.diff == pytest.approx(sum(BETTER) / 4 - sum(BASE) / 4)
    assert line.p_value == pytest.approx(stats.welch_test(BETTER, BASE, 0.0, "less")) and line.better
    assert report.winner is line
    text = markdown(report, "t")
    assert "the runs are unpaired" in text and "equal_var=False" in text and "ttest_rel" not in text
    assert "| repeat |" in text and "an unpaired difference of" in text


def test_the_same_numbers_paired_use_the_paired_test():
    report = build_report(configs(BASE, BETTER), Objective("val_loss"), [1, 2, 3, 4])
    assert report.lines[1].p_value == pytest.approx(stats.paired_test(BETTER, BASE))
    assert "ttest_rel" in markdown(report, "t") and "| seed |" in markdown(report, "t")
