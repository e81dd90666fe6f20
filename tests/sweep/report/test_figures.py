"""What makes compare's figures readable, on real matplotlib figures: few round ticks on log axes, one label
for points drawn on top of each other, Optuna's contour matrix as a row of distinct pairs, lines visible on
a light background, and tables without columns no trial fills."""
from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import optuna
import pytest
from paths import SPACES

from sweep.inputs.space import load_space
from sweep.report import figures
from sweep.report.table import without_empty_columns


@pytest.mark.parametrize("low, high, expected", [
    (4e-3, 2.5e-2, [0.005, 0.01, 0.02]),            # under a decade: 1, 2, 5 steps
    (1e-4, 5e-2, [0.0001, 0.001, 0.01]),            # several decades: powers of ten
    (0.02, 2.0, [0.1, 1.0]),
    (1e-9, 1.0, [1e-9, 1e-6, 1e-3, 1.0]),           # many decades: every third
    (2.5e-3, 4.5e-3, [0.0026, 0.0043]),             # no round value inside: the ends, rounded
])
def test_log_axes_get_a_few_round_ticks(low, high, expected):
    ticks = figures.log_ticks(low, high)
    assert ticks == pytest.approx(expected)
    assert len(ticks) <= figures.MOST_TICKS and all(low <= t <= high for t in ticks)


def test_log_tick_labels_are_plain_and_minor_ticks_unlabelled():
    fig, ax = plt.subplots()
    ax.set_xscale("log")
    ax.set_xlim(4e-3, 2.5e-2)
    figures.few_log_ticks(ax)
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.005", "0.01", "0.02"]
    assert all(t.get_text() == "" for t in ax.xaxis.get_minorticklabels())
    plt.close(fig)


def _labels(ax) -> list[str]:
    return sorted(text.get_text() for text in ax.texts)


def test_points_drawn_on_top_of_each_other_share_one_label():
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_xlim(0, 1)
    ax.set_ylim(1.0, 4.0)
    # Trials 2, 3, 0 and 1 at a fraction of 0 with objectives a hair apart; 4 and 5 far from them and apart.
    points = [(0.0, 1.3879, "2"), (0.0, 1.3915, "3"), (0.0, 1.3916, "0"), (0.0, 1.4054, "1"),
              (0.0, 3.9, "5"), (0.8, 1.39, "4")]
    figures.label_points(ax, points)
    assert _labels(ax) == ["0, 1, 2, 3", "4", "5"]
    plt.close(fig)


def test_a_long_shared_label_names_a_few_and_counts_the_rest():
    assert figures.group_label([str(n) for n in (12, 3, 4, 1, 2)]) == "1, 2, 3, 4, 12"
    assert figures.group_label([str(n) for n in range(25)]) == "0, 1, 2, 3 +21"


def _study(trials: int) -> optuna.Study:
    space = load_space(SPACES / "fp8_scales.yaml")
    study = optuna.create_study()
    for i in range(trials):
        params = {k: d.low * (d.high / d.low) ** ((i * (j + 2) % 7) / 6) for j, (k, d) in
                  enumerate(space.distributions().items())}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space.distributions(),
                                                  value=2.0 + abs(math.log(params["fp8.x_s"] / 0.22))))
    return study


def test_the_contour_matrix_becomes_one_row_of_the_three_pairs():
    import optuna.visualization.matplotlib as ovm

    with matplotlib.rc_context(), pytest.warns(optuna.exceptions.ExperimentalWarning):
        axes = ovm.plot_contour(_study(8), params=["fp8.x_s", "fp8.w_s", "fp8.grad_s"], target_name="val_loss")
    fig = figures.pairs_in_a_row(axes, "val_loss")
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 3 and len(fig.axes) == 4       # three panels and one colour bar, no empty diagonal
    assert {(ax.get_xlabel(), ax.get_ylabel()) for ax in panels} == {
        ("fp8.grad_s", "fp8.w_s"), ("fp8.grad_s", "fp8.x_s"), ("fp8.w_s", "fp8.x_s")}
    assert len({round(ax.get_position().y0, 3) for ax in panels}) == 1      # side by side
    plt.close(fig)


def test_lines_coloured_by_value_leave_out_the_light_end_of_the_map():
    def brightness(cmap, at: float) -> float:
        return sum(cmap(at)[:3])

    for cmap in (plt.get_cmap("Blues"), plt.get_cmap("Blues_r")):
        visible = figures.without_light_end(cmap)
        lightest = max(brightness(cmap, 0.0), brightness(cmap, 1.0))
        assert max(brightness(visible, 0.0), brightness(visible, 1.0)) < 0.85 * lightest
        # the same direction: the best trials stay dark
        assert (brightness(visible, 0.0) > brightness(visible, 1.0)) == (brightness(cmap, 0.0) > brightness(cmap, 1.0))


def test_columns_no_row_fills_are_left_out_the_leading_ones_kept():
    lines = [["rank", "trial", "status", "objective", "roundtrip_val_bpb", "wallclock_s"],
             ["1", "trial_0000", "ok", "1.39", "-", "27.7"],
             ["-", "trial_0001", "failed", "-", "-", "-"]]
    assert without_empty_columns(lines, first=3) == [
        ["rank", "trial", "status", "objective", "wallclock_s"], ["1", "trial_0000", "ok", "1.39", "27.7"],
        ["-", "trial_0001", "failed", "-", "-"]]
    assert without_empty_columns(lines[:1], first=3) == lines[:1]     # no rows yet: the header as it is
