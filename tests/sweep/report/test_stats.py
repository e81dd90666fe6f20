import math
import re

import numpy as np
import pytest
import scipy.stats
import torch

from sweep.report.stats import (
    golf_markdown,
    golf_test,
    one_sided_ttest,
    record_markdown,
    speedrun_test,
    std_mean,
)

# Figures published with the modded-nanogpt record #175 (retied LM head): nine seeds, the README's
# printed p-value and std/mean lines are the reference.
PR175_LOSSES = [3.2777, 3.2790, 3.2776, 3.2792, 3.2760, 3.2792, 3.2767, 3.2763, 3.2770]
PR175_TIMES = [123.853, 123.969, 123.929, 123.933, 123.914, 123.906, 123.970, 123.914, 123.964]


def test_p_value_matches_scipy_on_the_record_numbers():
    p = one_sided_ttest(PR175_LOSSES, 3.28)
    assert p == pytest.approx(scipy.stats.ttest_1samp(PR175_LOSSES, 3.28, alternative="less").pvalue, rel=1e-12)
    assert "%.4f" % p == "0.0002"


@pytest.mark.parametrize("seed", range(5))
def test_p_value_matches_scipy_on_random_numbers(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    values = rng.normal(3.28 + rng.normal(0, 0.002), rng.uniform(1e-4, 1e-2), size=n).tolist()
    target = 3.28 + float(rng.normal(0, 0.003))
    expected = scipy.stats.ttest_1samp(values, target, alternative="less").pvalue
    assert one_sided_ttest(values, target) == pytest.approx(expected, rel=1e-10, abs=1e-300)


def test_std_mean_matches_torch_default():
    for values in (PR175_LOSSES, PR175_TIMES, [1.0, 2.0, 4.0]):
        t_std, t_mean = torch.std_mean(torch.tensor(values, dtype=torch.float64))
        std, mean = std_mean(values)
        assert std == pytest.approx(t_std.item(), rel=1e-12)
        assert mean == pytest.approx(t_mean.item(), rel=1e-12)
    assert "%.4f" % std_mean(PR175_TIMES)[0] == "0.0375"
    assert "%.4f" % std_mean(PR175_TIMES)[1] == "123.9280"


def test_constant_values_give_a_definite_p_value():
    assert one_sided_ttest([3.27, 3.27, 3.27], 3.28) == 0.0
    assert one_sided_ttest([3.29, 3.29], 3.28) == 1.0


@pytest.mark.parametrize("values, message", [
    ([3.27], "at least 2"),
    ([3.27, float("nan")], r"values\[1\] is not finite"),
    ([3.27, "x"], r"values\[1\] is not a number"),
])
def test_bad_input_is_rejected_with_a_named_problem(values, message):
    with pytest.raises(ValueError, match=message):
        one_sided_ttest(values, 3.28)


def test_speedrun_verdict():
    assert speedrun_test(PR175_LOSSES).passed
    assert not speedrun_test([3.279, 3.281, 3.280, 3.2795]).passed


def test_golf_criterion_tests_against_baseline_minus_the_margin():
    baseline = 2.0727
    clear_win = [2.0600, 2.0604, 2.0598]           # ~0.0127 nats better, tight spread
    marginal = [2.0690, 2.0688, 2.0691]            # ~0.0037 nats better: below the 0.005 margin
    win = golf_test(clear_win, baseline)
    assert win.threshold == pytest.approx(baseline - 0.005)
    assert win.p_value == pytest.approx(
        scipy.stats.ttest_1samp(clear_win, baseline - 0.005, alternative="less").pvalue)
    assert win.passed
    assert not golf_test(marginal, baseline).passed
    with pytest.raises(ValueError, match="min_improvement"):
        golf_test(clear_win, baseline, min_improvement=-1)


def _run_code_block(markdown: str) -> dict:
    block = re.search(r"```python\n(.*?)```", markdown, re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "<record block>", "exec"), namespace)  # the block must be runnable as published
    return namespace


def test_record_markdown_contains_the_numbers_and_reproduces_them(capsys):
    md = record_markdown(PR175_LOSSES, PR175_TIMES, 3.28)
    for x in PR175_LOSSES + PR175_TIMES:
        assert repr(x) in md
    assert "# p=0.0002" in md
    # The published README shows std=0.0013 from a float32 tensor; the exact sample std is 0.00125 minus
    # rounding noise, which the float64 block prints as 0.0012.
    assert "# losses: (std=0.0012, mean=3.2776)" in md
    assert "# time: (std=0.0375, mean=123.9280)" in md
    assert "significant at p < 0.01" in md and "not significant" not in md
    ns = _run_code_block(md)
    printed = capsys.readouterr().out.splitlines()
    assert ns["losses"] == PR175_LOSSES and ns["times"] == PR175_TIMES
    # Every "# ..." comment in the block is what the line above it prints.
    comments = [line[2:] for line in re.search(r"```python\n(.*?)```", md, re.S).group(1).splitlines()
                if line.startswith("# ")]
    assert len(comments) == len(printed) == 3
    assert printed[0] == comments[0]
    for out, comment in zip(printed[1:], comments[1:]):
        assert re.findall(r"tensor\(([-\d.]+)", out) == re.findall(r"=([-\d.]+)", comment)


def test_record_markdown_without_times_and_tiny_p():
    losses = [3.2700 + 1e-5 * i for i in range(30)]
    md = record_markdown(losses, None)
    assert "times" not in md and "time:" not in md
    p = one_sided_ttest(losses, 3.28)
    assert p < 1e-4
    assert f"# p={'%.2e' % p}" in md


def test_golf_markdown_states_the_margin_and_the_verdict():
    md = golf_markdown([2.0600, 2.0604, 2.0598], [598.1, 599.0, 597.7], 2.0727)
    assert "2.0677" in md                     # the threshold baseline - 0.005 the test runs against
    assert "0.0126 nats" in md                # improvement = 2.0727 - mean
    assert "which meets" in md
    assert "does not meet" in golf_markdown([2.0690, 2.0688, 2.0691], None, 2.0727)
    assert math.isclose(_run_code_block(md)["losses"][0], 2.06)
