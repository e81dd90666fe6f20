"""Record statistics: the significance tests both upstream projects use to accept a claimed improvement.

modded-nanogpt accepts a speedrun record when a one-sided one-sample t-test of the final val losses
against the target (3.28) gives p < 0.01. parameter-golf wants the new mean to beat the current best by at
least 0.005 nats, shown at p < 0.01: the same test against `baseline - 0.005`.
`record_markdown` writes the evidence block the record READMEs carry, so it can be pasted as is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from scipy import stats as _scipy_stats

SPEEDRUN_TARGET = 3.28
RECORD_ALPHA = 0.01
GOLF_MIN_IMPROVEMENT = 0.005
SPEEDRUN_MIN_EFFECT = 0.002   # about what a speedrun record moves the mean val loss by (PR #175)


def _as_floats(values: Iterable[float], name: str, min_count: int) -> list[float]:
    out = []
    for i, v in enumerate(values):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name}[{i}] is not a number: {v!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"{name}[{i}] is not finite: {v!r}")
        out.append(f)
    if len(out) < min_count:
        raise ValueError(f"{name}: need at least {min_count} values, got {len(out)}")
    return out


def std_mean(values: Iterable[float]) -> tuple[float, float]:
    """(sample std with Bessel's correction, mean): the pair `torch.std_mean` prints."""
    xs = _as_floats(values, "values", 2)
    mean = math.fsum(xs) / len(xs)
    var = math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return math.sqrt(var), mean


def one_sided_ttest(values: Iterable[float], target: float) -> float:
    """p-value of the one-sample t-test with alternative "mean < target" (`scipy.stats.ttest_1samp`),
    except that values with no spread give a definite answer (0 below the target, 1 otherwise) where
    scipy gives NaN."""
    xs = _as_floats(values, "values", 2)
    target = float(target)
    std, mean = std_mean(xs)
    if std == 0.0:
        return 0.0 if mean < target else 1.0
    return float(_scipy_stats.ttest_1samp(xs, target, alternative="less").pvalue)


@dataclass(frozen=True)
class SignificanceTest:
    """One-sided test that the true mean lies below `threshold`."""

    n: int
    mean: float
    std: float
    threshold: float
    p_value: float
    alpha: float

    @property
    def passed(self) -> bool:
        return self.p_value < self.alpha


def speedrun_test(losses: Sequence[float], target: float = SPEEDRUN_TARGET,
                  alpha: float = RECORD_ALPHA) -> SignificanceTest:
    """modded-nanogpt criterion: mean final val loss below `target` at p < alpha."""
    std, mean = std_mean(losses)
    return SignificanceTest(len(losses), mean, std, float(target), one_sided_ttest(losses, target), alpha)


def golf_test(losses: Sequence[float], baseline: float, min_improvement: float = GOLF_MIN_IMPROVEMENT,
              alpha: float = RECORD_ALPHA) -> SignificanceTest:
    """parameter-golf criterion: mean val loss at least `min_improvement` nats below `baseline`, p < alpha."""
    if min_improvement < 0:
        raise ValueError(f"min_improvement must be >= 0, got {min_improvement}")
    return speedrun_test(losses, float(baseline) - min_improvement, alpha)


def _p_format(p: float) -> str:
    # The record READMEs print p with %.4f; that would show tiny p-values as 0.0000.
    return "%.4f" if p >= 1e-4 else "%.2e"


def format_p(p: float) -> str:
    return _p_format(p) % p


def _code_block(losses: list[float], times: list[float], threshold: float, p: float) -> list[str]:
    # float64 in the printed code: the README convention's float32 tensor can round a std that sits on a
    # 4-decimal boundary the other way from the exact figure the comment gives.
    p_fmt = _p_format(p)
    lines = ["```python", "import scipy.stats", "import torch", ""]
    lines.append(f"losses = [{', '.join(repr(x) for x in losses)}]")
    if times:
        lines.append(f"times = [{', '.join(repr(x) for x in times)}]")
    lines += [
        "",
        f'print("p={p_fmt}" % scipy.stats.ttest_1samp(losses, {threshold!r}, alternative="less").pvalue)',
        f"# p={p_fmt % p}",
        "",
        'print("losses:", torch.std_mean(torch.tensor(losses, dtype=torch.float64)))',
        "# losses: (std=%.4f, mean=%.4f)" % std_mean(losses),
    ]
    if times:
        lines += [
            "",
            'print("time:", torch.std_mean(torch.tensor(times, dtype=torch.float64)))',
            "# time: (std=%.4f, mean=%.4f)" % std_mean(times),
        ]
    lines.append("```")
    return lines


def record_markdown(losses: Sequence[float], times: Sequence[float] | None, target: float = SPEEDRUN_TARGET,
                    *, alpha: float = RECORD_ALPHA) -> str:
    """Evidence block for a speedrun record: losses, times (seconds), p-value, std/mean, verdict."""
    xs = _as_floats(losses, "losses", 2)
    ts = _as_floats(times, "times", 2) if times else []
    result = speedrun_test(xs, target, alpha)
    verdict = "significant" if result.passed else "not significant"
    lines = _code_block(xs, ts, result.threshold, result.p_value)
    lines += ["", f"{result.n} runs, mean val_loss {result.mean:.4f} against target {result.threshold:g}: "
                  f"p={_p_format(result.p_value) % result.p_value} ({verdict} at p < {alpha:g})."]
    return "\n".join(lines) + "\n"


def golf_markdown(losses: Sequence[float], times: Sequence[float] | None, baseline: float, *,
                  min_improvement: float = GOLF_MIN_IMPROVEMENT, alpha: float = RECORD_ALPHA) -> str:
    """Evidence block for a parameter-golf submission: the t-test runs against `baseline - min_improvement`."""
    xs = _as_floats(losses, "losses", 2)
    ts = _as_floats(times, "times", 2) if times else []
    result = golf_test(xs, baseline, min_improvement, alpha)
    verdict = "meets" if result.passed else "does not meet"
    lines = _code_block(xs, ts, result.threshold, result.p_value)
    lines += ["", f"{result.n} runs, mean val_loss {result.mean:.4f}, improvement over the baseline "
                  f"{float(baseline):g}: {float(baseline) - result.mean:.4f} nats; one-sided t-test against "
                  f"{result.threshold:g} (baseline - {min_improvement:g}): "
                  f"p={_p_format(result.p_value) % result.p_value}, which {verdict} the >= {min_improvement:g} "
                  f"nats at p < {alpha:g} rule."]
    return "\n".join(lines) + "\n"


def paired_test(values: Sequence[float], baseline: Sequence[float], mode: str = "min") -> float:
    """p-value of the one-sided paired t-test that `values` beat `baseline` seed by seed (lower when `mode`
    is min, higher when max): `scipy.stats.ttest_rel(values, baseline, alternative="less" / "greater")`,
    except that differences with no spread give a definite answer where scipy gives NaN: 0 when every seed
    improves by the same amount, 1 otherwise, so a configuration identical to its baseline is never better."""
    xs = _as_floats(values, "values", 2)
    base = _as_floats(baseline, "baseline", 2)
    if len(xs) != len(base):
        raise ValueError(f"paired values: {len(xs)} values against {len(base)} baseline values")
    std, mean = std_mean([x - b for x, b in zip(xs, base)])
    if std == 0.0:
        return 0.0 if (mean < 0 if mode == "min" else mean > 0) else 1.0
    alternative = "less" if mode == "min" else "greater"
    return float(_scipy_stats.ttest_rel(xs, base, alternative=alternative).pvalue)


def welch_test(values: Sequence[float], baseline: Sequence[float], shift: float = 0.0,
               alternative: str = "greater") -> float:
    """p-value of Welch's one-sided test that mean(values) - mean(baseline) is above `shift` (alternative
    "greater") or below it ("less"), for two unpaired samples: `scipy.stats.ttest_ind(values - shift,
    baseline, equal_var=False)`, except that samples with no spread give a definite answer (0 when the
    difference lies on the alternative's side, 1 otherwise) where scipy gives NaN."""
    xs = [x - shift for x in _as_floats(values, "values", 2)]
    base = _as_floats(baseline, "baseline", 2)
    if std_mean(xs)[0] == 0.0 and std_mean(base)[0] == 0.0:
        gap = math.fsum(xs) / len(xs) - math.fsum(base) / len(base)
        return 0.0 if (gap > 0 if alternative == "greater" else gap < 0) else 1.0
    return float(_scipy_stats.ttest_ind(xs, base, equal_var=False, alternative=alternative).pvalue)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The two-sided t confidence interval of the mean (`scipy.stats.t.interval` on the standard error)."""
    xs = _as_floats(values, "values", 2)
    std, mean = std_mean(xs)
    if std == 0.0:
        return mean, mean
    low, high = _scipy_stats.t.interval(level, len(xs) - 1, loc=mean, scale=std / math.sqrt(len(xs)))
    return float(low), float(high)


def pooled_std(groups: Iterable[Sequence[float]]) -> float | None:
    """The pooled sample std of several groups (each of at least 2 values), None when there is none."""
    dof, total = 0, 0.0
    for group in groups:
        if len(group) < 2:
            continue
        std, _ = std_mean(group)
        dof += len(group) - 1
        total += (len(group) - 1) * std * std
    return math.sqrt(total / dof) if dof else None


def detectable_difference(std: float, n: int, alpha: float = RECORD_ALPHA, power: float = 0.8) -> float:
    """The smallest paired difference that n seeds detect with the one-sided paired t-test at p < alpha with
    the given power, for runs whose seed std is `std`: (t_{1-alpha, n-1} + t_{power, n-1}) * sqrt(2) * std /
    sqrt(n). The differences' std is taken as sqrt(2) * std, that of two independent runs: what pairing the
    seeds cancels on top of that is a bonus the estimate does not count on."""
    if n < 2:
        raise ValueError(f"need at least 2 seeds, got {n}")
    t = _scipy_stats.t
    return float((t.ppf(1 - alpha, n - 1) + t.ppf(power, n - 1)) * math.sqrt(2.0) * std / math.sqrt(n))
