"""The confirmed leaderboard of a sweep (`sweep run --confirm`): per configuration the mean and std over its
seeds, the 95% t-interval of the mean, the difference to the baseline and its naive one-sided p-value
(paired seeds: `scipy.stats.ttest_rel`, sweep.report.stats.paired_test; unpaired repeats: Welch's test). The fixed
design (`--confirm-fixed`) judges each at p < 0.01 over all its seeds; the sequential design
(sweep.report.sequential) adds the round each configuration stopped in, why, its sequential p-value adjusted
across configurations (Holm), and what the seeds spent compare to. The winner only when it is better, and
otherwise what the seeds could have detected. No Ray, no MLflow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from sweep.inputs.objective import Objective
from sweep.report import sequential, stats
from sweep.report.table import fmt
from sweep.report.trial_rows import NOISE_FLOOR_STDS
from sweep.report.verify_claim import NOT_RUN, SeedResult

CONFIDENCE = 0.95


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
    diff: float | None                # mean difference to the baseline (config - baseline)
    p_value: float | None             # naive one-sided p-value over all its seeds
    better: bool
    course: sequential.Course | None = None   # sequential: its looks and how it stopped
    p_sequential: float | None = None         # sequential: the repeated p-value over its looks
    p_adjusted: float | None = None           # sequential: p_sequential adjusted across configurations (Holm)


@dataclass(frozen=True)
class Spent:
    """What a sequential confirmation spent, against the fixed design with the same alpha and power."""
    runs: int                         # the confirmation's runs, the baseline's included
    diff_std: float | None            # the std of the per-seed differences to the baseline, pooled
    fixed_seeds: int | None           # seeds per configuration the fixed design needs at that std
    planned_seeds: int | None         # the sequential maximum that decides min_effect at that std


@dataclass
class ConfirmReport:
    objective: Objective
    seeds: list[int]
    lines: list[ConfigLine]           # the baseline first
    pooled_std: float | None
    detectable: float | None          # the smallest difference the seeds detect (baseline's std)
    alpha: float = stats.RECORD_ALPHA
    power: float = sequential.POWER
    winner: ConfigLine | None = None
    paired: bool = True
    design: sequential.Design | None = None   # the sequential design; None: the fixed design
    spent: Spent | None = None

    @property
    def baseline(self) -> ConfigLine:
        return self.lines[0]


def goodness(value: float, mode: str) -> float:
    """A value oriented so that larger is better."""
    return -value if mode == "min" else value


def improvement_sample(losses: dict[int, float], baseline: dict[int, float], mode: str,
                       paired: bool) -> sequential.Sample:
    """What the sequential design tests for a configuration: its per-seed improvements over the baseline on
    the seeds both have (paired), or both samples as they are (unpaired)."""
    if paired:
        return sequential.Sample(tuple(goodness(losses[s], mode) - goodness(baseline[s], mode)
                                       for s in sorted(losses) if s in baseline))
    return sequential.Sample(tuple(goodness(v, mode) for v in losses.values()),
                             tuple(goodness(v, mode) for v in baseline.values()))


def _difference(losses: dict[int, float], baseline: dict[int, float], mode: str,
                paired: bool) -> tuple[float | None, float | None]:
    """(mean difference config - baseline, its naive one-sided p-value), or Nones with too few seeds."""
    if paired:
        seeds = [s for s in losses if s in baseline]
        if len(seeds) < 2:
            return None, None
        mine, theirs = [losses[s] for s in seeds], [baseline[s] for s in seeds]
        return (sum(m - t for m, t in zip(mine, theirs)) / len(seeds), stats.paired_test(mine, theirs, mode))
    mine, theirs = list(losses.values()), list(baseline.values())
    if len(mine) < 2 or len(theirs) < 2:
        return None, None
    diff = sum(mine) / len(mine) - sum(theirs) / len(theirs)
    return diff, stats.welch_test(mine, theirs, 0.0, "less" if mode == "min" else "greater")


def _line(config: ConfirmedConfig, baseline: dict[int, float] | None, mode: str, alpha: float,
          paired: bool) -> ConfigLine:
    losses = config.losses()
    values = list(losses.values())
    std, mean = stats.std_mean(values) if len(values) >= 2 else (None, values[0] if values else None)
    ci = stats.t_interval(values, CONFIDENCE) if len(values) >= 2 else None
    diff, p = (None, None) if baseline is None else _difference(losses, baseline, mode, paired)
    return ConfigLine(config, len(values), mean, std, ci, diff, p, p is not None and p < alpha)


def _diff_std(configs: list[ConfirmedConfig], mode: str, paired: bool) -> float | None:
    """The pooled std of the per-seed differences to the baseline (unpaired: sqrt(2) x the pooled std of
    the runs, that of the difference of two independent runs)."""
    base = configs[0].losses()
    if not paired:
        pooled = stats.pooled_std([list(c.losses().values()) for c in configs])
        return None if pooled is None else math.sqrt(2.0) * pooled
    return stats.pooled_std([list(improvement_sample(c.losses(), base, mode, True).values) for c in configs[1:]])


def _spent(configs: list[ConfirmedConfig], objective: Objective, design: sequential.Design, paired: bool) -> Spent:
    runs = sum(r.status != NOT_RUN for c in configs for r in c.results)
    std = _diff_std(configs, objective.mode, paired)
    if std is None or std == 0.0 or design.min_effect is None:
        return Spent(runs, std, None, None)
    try:
        fixed = sequential.fixed_seeds(design.min_effect, std, design.alpha / design.hypotheses, design.power)
    except ValueError:     # beyond any number of seeds worth naming
        return Spent(runs, std, None, None)
    try:
        planned = sequential.planned_seeds(design.min_effect, std, design.alpha, design.power, design.hypotheses)
    except ValueError:
        planned = None
    return Spent(runs, std, fixed, planned)


def build_report(configs: list[ConfirmedConfig], objective: Objective, seeds: list[int],
                 alpha: float = stats.RECORD_ALPHA, power: float = sequential.POWER,
                 rounds: sequential.Rounds | None = None, paired: bool = True) -> ConfirmReport:
    """The report of `configs` (the baseline first), each run on `seeds` (the sequential design's: at most
    those, as its `rounds` went)."""
    base = _line(configs[0], None, objective.mode, alpha, paired)
    lines = [base] + [_line(c, configs[0].losses(), objective.mode, alpha, paired) for c in configs[1:]]
    design = spent = None
    if rounds is not None:
        design = rounds.design
        raw, adjusted = rounds.sequential_p(), rounds.adjusted_p()
        lines = [base] + [replace(line, course=course, p_sequential=p, p_adjusted=q,
                                  better=course.state == sequential.BETTER)
                          for line, course, p, q in zip(lines[1:], rounds.courses, raw, adjusted)]
        spent = _spent(configs, objective, design, paired)
    pooled = stats.pooled_std([list(c.losses().values()) for c in configs])
    detectable = None if base.std is None else stats.detectable_difference(base.std, len(seeds), alpha, power)
    report = ConfirmReport(objective, seeds, lines, pooled, detectable, alpha, power, paired=paired, design=design,
                           spent=spent)
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
    if line.course is not None:
        if line.course.state == sequential.NOT_BETTER:
            return "not better (futility)"
        return line.course.verdict
    if line.p_value is None:
        return "too few seeds"
    return f"better (p < {alpha:g})" if line.better else "not significant"


def _test_text(report: ConfirmReport) -> str:
    better = report.objective.mode == "min"
    side = "less" if better else "greater"
    if report.paired:
        return (f"the differences are paired seed by seed; p is the one-sided paired t-test of the per-seed "
                f"differences (`scipy.stats.ttest_rel(config, baseline, alternative=\"{side}\")`)")
    return (f"the script names no seed, so the runs are unpaired repeats; p is Welch's one-sided test "
            f"(`scipy.stats.ttest_ind(config, baseline, equal_var=False, alternative=\"{side}\")`)")


def _header(report: ConfirmReport) -> list[str]:
    metric, alpha = report.objective.metric, report.alpha
    better = "lower" if report.objective.mode == "min" else "higher"
    design = report.design
    if design is None:
        seeds = ", ".join(str(s) for s in report.seeds)
        return [f"{metric} ({better} is better). Every configuration ran seeds {seeds}, the baseline's seeds, so "
                f"{_test_text(report)}, judged at p < {alpha:g}.", "",
                f"| configuration | seeds | mean | std | {CONFIDENCE:.0%} CI | diff to baseline | p (one-sided) | "
                f"verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    futility = ("no futility stop" if design.min_effect is None else
                f"not better (futility) once an improvement of {design.min_effect:g} is implausible at power "
                f"{design.power:g}")
    return [f"{metric} ({better} is better). Sequential confirmation: round 1 runs seeds 1 and 2, each later round "
            f"the next seed, of every configuration still undecided and of the baseline; {_test_text(report)}. "
            f"After each round a configuration stops: better when its sequential p-value (the group-sequential "
            f"design spending alpha as alpha x (n / {design.max_seeds})^{sequential.EFFICACY_RHO:g}), adjusted "
            f"across the {design.hypotheses} configurations by Holm, is at most {design.alpha:g}; {futility}; "
            f"inconclusive after {design.max_seeds} seeds (docs/confirmation.md).", "",
            f"| configuration | seeds | mean | std | {CONFIDENCE:.0%} CI | diff to baseline | p (one-sided) | "
            f"p sequential (Holm) | stopped | verdict |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]


def _cells(line: ConfigLine, first: bool, report: ConfirmReport) -> list[str]:
    ci = "-" if line.ci is None else f"[{line.ci[0]:.6g}, {line.ci[1]:.6g}]"
    diff = "-" if line.diff is None else f"{line.diff:+.4g}"
    p = "-" if line.p_value is None else stats.format_p(line.p_value)
    cells = [_config_name(line, first), str(line.n), _num(line.mean), _num(line.std), ci, diff, p]
    if report.design is not None:
        adjusted = "-" if line.p_adjusted is None else stats.format_p(line.p_adjusted)
        stopped = "-" if line.course is None or line.course.stopped is None else f"round {line.course.stopped}"
        cells += [adjusted, stopped]
    return cells + [_verdict(line, first, report.alpha)]


def markdown(report: ConfirmReport, title: str) -> str:
    out = [f"### {title}", "", *_header(report)]
    for i, line in enumerate(report.lines):
        out.append("| " + " | ".join(_cells(line, i == 0, report)) + " |")
    names = " | ".join(_config_name(line, i == 0) for i, line in enumerate(report.lines))
    out += ["", f"| {'seed' if report.paired else 'repeat'} | {names} |",
            "| --- |" + " --- |" * len(report.lines)]
    for seed in report.seeds:
        cells = []
        for line in report.lines:
            result = next((r for r in line.config.results if r.seed == seed), None)
            cells.append("-" if result is None else repr(result.loss) if result.usable else result.status)
        if any(cell != "-" for cell in cells):
            out.append(f"| {seed} | " + " | ".join(cells) + " |")
    out += ["", *_conclusion(report)]
    return "\n".join(out) + "\n"


def _winner_line(report: ConfirmReport) -> str:
    winner, base, metric = report.winner, report.baseline, report.objective.metric
    values = ", ".join(f"{k}={fmt(v)}" for k, v in winner.config.values.items())
    text = (f"**Winner: trial {winner.config.trial}** ({values}): {metric} {winner.mean:.6g} against the "
            f"baseline's {base.mean:.6g}, {'a paired' if report.paired else 'an unpaired'} difference of "
            f"{winner.diff:+.4g}")
    if winner.p_adjusted is not None:
        return text + (f", better at a sequential p-value of {stats.format_p(winner.p_adjusted)} adjusted for "
                       f"{report.design.hypotheses} configurations (<= {report.design.alpha:g}).")
    return text + f" at p = {stats.format_p(winner.p_value)} (p < {report.alpha:g})."


def _spent_lines(report: ConfirmReport) -> list[str]:
    spent, design = report.spent, report.design
    per = ", ".join(f"{_config_name(line, i == 0)} {sum(r.status != NOT_RUN for r in line.config.results)}"
                    for i, line in enumerate(report.lines))
    lines = [f"Seeds spent: {spent.runs} runs ({per})."]
    if spent.fixed_seeds is not None:
        configs = len(report.lines)
        lines[-1] += (f" The fixed design with the same alpha and power (the one-sided t-test at "
                      f"{design.alpha:g} / {design.hypotheses}, power {design.power:g} at an improvement of "
                      f"{design.min_effect:g}, for the std of the differences seen here, {spent.diff_std:.4g}) "
                      f"would have run {spent.fixed_seeds} seeds of each of the {configs} configurations: "
                      f"{spent.fixed_seeds * configs} runs.")
    if any(line.course is not None and line.course.state == sequential.INCONCLUSIVE for line in report.lines):
        if spent.planned_seeds is not None:
            lines.append(f"Inconclusive: at this std, {design.max_seeds} seeds at most decide an improvement of "
                         f"{design.decisive_difference(spent.diff_std):.4g}; deciding {design.min_effect:g} takes "
                         f"`--confirm-seeds {spent.planned_seeds}`.")
    return lines


def _conclusion(report: ConfirmReport) -> list[str]:
    metric, alpha, n = report.objective.metric, report.alpha, len(report.seeds)
    base = report.baseline
    lines = []
    if report.winner is not None:
        lines.append(_winner_line(report))
    elif report.design is not None:
        lines.append("**No configuration beat the baseline beyond noise** (none is better).")
    else:
        lines.append(f"**No configuration beat the baseline beyond noise** (none has p < {alpha:g}).")
        if report.detectable is not None:
            lines.append(
                f"With {n} seeds and the baseline's seed std {base.std:.4g}, the smallest paired difference these "
                f"seeds detect at p < {alpha:g} with {report.power:.0%} power is {report.detectable:.4g}: "
                f"(t_{{{1 - alpha:g}, {n - 1}}} + t_{{{report.power:g}, {n - 1}}}) x sqrt(2) x {base.std:.4g} / "
                f"sqrt({n}).")
    if report.spent is not None:
        lines += _spent_lines(report)
    if report.pooled_std is not None:
        lines.append(f"Pooled seed std {report.pooled_std:.4g}: the search leaderboard's noise floor is "
                     f"{NOISE_FLOOR_STDS} x std = {NOISE_FLOOR_STDS * report.pooled_std:.4g}.")
    ran = [r for line in report.lines for r in line.config.results if r.status != NOT_RUN]
    missing = sum(not r.usable for r in ran)
    if missing:
        lines.append(f"{missing} of {len(ran)} runs gave no {metric}; the statistics cover the others.")
    return lines


def metrics(report: ConfirmReport) -> dict[str, float]:
    """The report's figures as metrics of the sweep's parent run: `confirm.trial_N.<figure>` per
    configuration, the pooled std and detectable difference, and with the sequential design the runs spent
    and those the fixed design would have."""
    out: dict[str, float] = {}
    for line in report.lines:
        prefix = f"confirm.trial_{line.config.trial}."
        figures = {"mean": line.mean, "std": line.std, "diff": line.diff, "p_value": line.p_value,
                   "ci_low": line.ci and line.ci[0], "ci_high": line.ci and line.ci[1], "seeds": line.n,
                   "p_sequential": line.p_sequential, "p_adjusted": line.p_adjusted,
                   "stop_round": line.course and line.course.stopped}
        out.update({prefix + k: float(v) for k, v in figures.items() if v is not None})
    if report.pooled_std is not None:
        out["confirm.pooled_std"] = report.pooled_std
    if report.detectable is not None:
        out["confirm.detectable_diff"] = report.detectable
    if report.spent is not None:
        out["confirm.runs"] = report.spent.runs
        if report.spent.fixed_seeds is not None:
            out["confirm.fixed_design_runs"] = report.spent.fixed_seeds * len(report.lines)
    return out
