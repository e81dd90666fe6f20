"""The confirmed leaderboard of a sweep (`sweep run --confirm`): per configuration the mean and std over the
paired seeds, the 95% t-interval of the mean, the paired difference to the baseline and its one-sided
p-value (`scipy.stats.ttest_rel`, sweep.report.stats.paired_test), and the verdict at p < 0.01; the winner only
when it is significant, and otherwise what difference the seeds could have detected. Repeats of a script
with no seed (an unpaired confirmation) are compared by the difference of the means and Welch's t-test
(`scipy.stats.ttest_ind(..., equal_var=False)`, sweep.report.stats.welch_test), and the report says they are
unpaired. No Ray, no MLflow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweep.inputs.objective import Objective
from sweep.report import stats
from sweep.report.table import fmt
from sweep.report.trial_rows import NOISE_FLOOR_STDS
from sweep.report.verify_claim import SeedResult

CONFIDENCE = 0.95
POWER = 0.8


@dataclass(frozen=True)
class ConfirmedConfig:
    trial: int                        # the search trial whose configuration this is
    values: dict[str, Any]            # its swept values
    results: list[SeedResult]         # one per seed, in seed order

    def losses(self) -> dict[int, float]:
        return {r.seed: r.loss for r in self.results if r.usable}


@dataclass(frozen=True)
class ConfigLine:
    config: ConfirmedConfig
    n: int
    mean: float | None
    std: float | None
    ci: tuple[float, float] | None
    diff: float | None                # mean (paired) difference to the baseline (config - baseline)
    p_value: float | None
    better: bool


@dataclass
class ConfirmReport:
    objective: Objective
    seeds: list[int]
    lines: list[ConfigLine]           # the baseline first
    pooled_std: float | None
    detectable: float | None          # the smallest difference the seeds detect (baseline's std)
    alpha: float = stats.RECORD_ALPHA
    winner: ConfigLine | None = None
    paired: bool = True               # False: repeats without a seed, compared unpaired

    @property
    def baseline(self) -> ConfigLine:
        return self.lines[0]


def _compare(losses: dict[int, float], baseline: dict[int, float], mode: str,
             paired: bool) -> tuple[float | None, float | None]:
    """(difference to the baseline, one-sided p-value): seed by seed when `paired`, else of the means."""
    if paired:
        seeds = [s for s in losses if s in baseline]
        mine, theirs = [losses[s] for s in seeds], [baseline[s] for s in seeds]
    else:
        mine, theirs = list(losses.values()), list(baseline.values())
    if len(mine) < 2 or len(theirs) < 2:
        return None, None
    if paired:
        return sum(m - t for m, t in zip(mine, theirs)) / len(mine), stats.paired_test(mine, theirs, mode)
    return sum(mine) / len(mine) - sum(theirs) / len(theirs), stats.welch_test(mine, theirs, mode)


def _line(config: ConfirmedConfig, baseline: dict[int, float] | None, mode: str, alpha: float,
          paired: bool) -> ConfigLine:
    losses = config.losses()
    values = list(losses.values())
    std, mean = stats.std_mean(values) if len(values) >= 2 else (None, values[0] if values else None)
    ci = stats.t_interval(values, CONFIDENCE) if len(values) >= 2 else None
    diff, p = (None, None) if baseline is None else _compare(losses, baseline, mode, paired)
    return ConfigLine(config, len(values), mean, std, ci, diff, p, p is not None and p < alpha)


def build_report(configs: list[ConfirmedConfig], objective: Objective, seeds: list[int],
                 alpha: float = stats.RECORD_ALPHA, paired: bool = True) -> ConfirmReport:
    """The report of `configs` (the baseline first), each run on `seeds` (when not `paired`, `seeds` number
    the repeats of a script that has no seed)."""
    base = _line(configs[0], None, objective.mode, alpha, paired)
    lines = [base] + [_line(c, configs[0].losses(), objective.mode, alpha, paired) for c in configs[1:]]
    pooled = stats.pooled_std([list(c.losses().values()) for c in configs])
    detectable = None if base.std is None else stats.detectable_difference(base.std, len(seeds), alpha, POWER)
    report = ConfirmReport(objective, seeds, lines, pooled, detectable, alpha, paired=paired)
    better = [line for line in lines[1:] if line.better]
    if better:
        sign = 1.0 if objective.mode == "min" else -1.0
        report.winner = min(better, key=lambda line: sign * line.diff)
    return report


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _config_name(line: ConfigLine, first: bool) -> str:
    return f"baseline (trial {line.config.trial})" if first else f"trial {line.config.trial}"


def _verdict(line: ConfigLine, first: bool, alpha: float) -> str:
    if first:
        return "baseline"
    if line.p_value is None:
        return "too few seeds"
    return f"better (p < {alpha:g})" if line.better else "not significant"


def markdown(report: ConfirmReport, title: str) -> str:
    metric, alpha = report.objective.metric, report.alpha
    better = "lower" if report.objective.mode == "min" else "higher"
    seeds = ", ".join(str(s) for s in report.seeds)
    alternative = "less" if better == "lower" else "greater"
    design = (f"Every configuration ran seeds {seeds}, the baseline's seeds, so the differences are paired seed "
              f"by seed; p is the one-sided paired t-test of the per-seed differences "
              f"(`scipy.stats.ttest_rel(config, baseline, alternative=\"{alternative}\")`)" if report.paired else
              f"The script has no seed, so every configuration ran {len(report.seeds)} repeats that differ only by "
              f"nondeterminism: the runs are unpaired, the difference is that of the means, and p is the one-sided "
              f"Welch's t-test (`scipy.stats.ttest_ind(config, baseline, equal_var=False, "
              f"alternative=\"{alternative}\")`)")
    out = [f"### {title}", "", f"{metric} ({better} is better). {design}, judged at p < {alpha:g}.", "",
           f"| configuration | seeds | mean | std | {CONFIDENCE:.0%} CI | diff to baseline | p (one-sided) | verdict |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, line in enumerate(report.lines):
        ci = "-" if line.ci is None else f"[{line.ci[0]:.6g}, {line.ci[1]:.6g}]"
        diff = "-" if line.diff is None else f"{line.diff:+.4g}"
        p = "-" if line.p_value is None else stats.format_p(line.p_value)
        out.append(f"| {_config_name(line, i == 0)} | {line.n} | {_num(line.mean)} | {_num(line.std)} | {ci} | "
                   f"{diff} | {p} | {_verdict(line, i == 0, alpha)} |")
    out += ["", f"| {'seed' if report.paired else 'repeat'} | " + " | ".join(_config_name(line, i == 0) for i, line in enumerate(report.lines)) + " |",
            "| --- |" + " --- |" * len(report.lines)]
    for seed in report.seeds:
        cells = []
        for line in report.lines:
            result = next(r for r in line.config.results if r.seed == seed)
            cells.append(repr(result.loss) if result.usable else result.status)
        out.append(f"| {seed} | " + " | ".join(cells) + " |")
    out += ["", *_conclusion(report)]
    return "\n".join(out) + "\n"


def _conclusion(report: ConfirmReport) -> list[str]:
    metric, alpha, n = report.objective.metric, report.alpha, len(report.seeds)
    winner, base = report.winner, report.baseline
    lines = []
    if winner is not None:
        values = ", ".join(f"{k}={fmt(v)}" for k, v in winner.config.values.items())
        lines.append(f"**Winner: trial {winner.config.trial}** ({values}): {metric} {winner.mean:.6g} against the "
                     f"baseline's {base.mean:.6g}, {'a paired' if report.paired else 'an unpaired'} difference of "
                     f"{winner.diff:+.4g} at p = {stats.format_p(winner.p_value)} (p < {alpha:g}).")
    else:
        lines.append(f"**No configuration beat the baseline beyond noise** (none has p < {alpha:g}).")
        if report.detectable is not None:
            lines.append(
                (f"With {n} seeds and the baseline's seed std {base.std:.4g}, the smallest paired difference these "
                 f"seeds detect" if report.paired else
                 f"With {n} repeats and the baseline's std {base.std:.4g}, the smallest difference these repeats "
                 f"detect") + f" at p < {alpha:g} with {POWER:.0%} power is {report.detectable:.4g}: "
                f"(t_{{{1 - alpha:g}, {n - 1}}} + t_{{{POWER:g}, {n - 1}}}) x sqrt(2) x {base.std:.4g} / sqrt({n}).")
    if report.pooled_std is not None:
        lines.append(f"Pooled seed std {report.pooled_std:.4g}: the search leaderboard's noise floor is "
                     f"{NOISE_FLOOR_STDS} x std = {NOISE_FLOOR_STDS * report.pooled_std:.4g}.")
    missing = sum(not r.usable for line in report.lines for r in line.config.results)
    if missing:
        lines.append(f"{missing} of {len(report.lines) * n} runs gave no {metric}; the statistics cover the others.")
    return lines


def metrics(report: ConfirmReport) -> dict[str, float]:
    """The report's figures as metrics of the sweep's parent run: `confirm.trial_N.<figure>` per
    configuration, and the pooled std and detectable difference."""
    out: dict[str, float] = {}
    for line in report.lines:
        prefix = f"confirm.trial_{line.config.trial}."
        figures = {"mean": line.mean, "std": line.std, "diff": line.diff, "p_value": line.p_value,
                   "ci_low": line.ci and line.ci[0], "ci_high": line.ci and line.ci[1], "seeds": line.n}
        out.update({prefix + k: float(v) for k, v in figures.items() if v is not None})
    if report.pooled_std is not None:
        out["confirm.pooled_std"] = report.pooled_std
    if report.detectable is not None:
        out["confirm.detectable_diff"] = report.detectable
    return out
