"""What `sweep verify` claims and how it is judged: the target, the seeds' results, the Markdown evidence.

The rule follows the preset: the speedrun is judged on the final val_loss against 3.28 (modded-nanogpt);
a golf run against the current record's loss minus 0.005 nats (parameter-golf), on the loss of its
exported artifact after the round trip when the runs export one, since that artifact is what a submission
is scored on. Other presets have no record to beat and need an explicit target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sweep.errors import InputError
from sweep.report import sequential, stats
from trainer.protocol import OK, WALLCLOCK_CAP

GOLF_PRESET = "golf"
SPEEDRUN_PRESET = "speedrun"
RESULT_STATES = (OK, WALLCLOCK_CAP)   # a seed's run with a usable final loss
NOT_RUN = "not run"                   # a seed's status while it has no run (yet, or ever)


@dataclass(frozen=True)
class Claim:
    target: float          # --target: the record to beat (golf) or the threshold itself
    golf_rule: bool        # test against target - 0.005 nats
    loss_metric: str       # the child-run metric tested: final_val_loss or roundtrip_val_loss

    @property
    def threshold(self) -> float:
        return self.target - stats.GOLF_MIN_IMPROVEMENT if self.golf_rule else self.target

    def describe(self) -> str:
        if self.golf_rule:
            return (f"{self.loss_metric} against the record {self.target:g} minus "
                    f"{stats.GOLF_MIN_IMPROVEMENT:g} nats = {self.threshold:g}")
        return f"{self.loss_metric} against {self.target:g}"

    def evidence(self, losses: list[float], times: list[float] | None) -> str:
        if self.golf_rule:
            return stats.golf_markdown(losses, times, self.target)
        return stats.record_markdown(losses, times, self.target)


def make_claim(preset: str, target: float | None, exports: bool) -> Claim:
    """The claim for runs of `preset`; `exports`: the runs write an artifact and evaluate its round trip."""
    if target is not None and not math.isfinite(target):
        raise InputError("--target", f"must be a finite number, got {target}")
    golf = preset == GOLF_PRESET
    if target is None:
        if preset == SPEEDRUN_PRESET:
            target = stats.SPEEDRUN_TARGET
        elif golf:
            raise InputError("--target", "the golf preset is judged against the current record: give its "
                                         "val_loss with --target (the seeds must beat it by "
                                         f"{stats.GOLF_MIN_IMPROVEMENT:g} nats)")
        else:
            raise InputError("--target", f"the {preset} preset has no record target; give the loss to beat "
                                         f"with --target")
    return Claim(float(target), golf, "roundtrip_val_loss" if exports else "final_val_loss")


def track_min_effect(preset: str, metric: str) -> float | None:
    """The improvement worth confirming on a record track: parameter-golf's 0.005 nats on the golf preset and
    on a golf-style script's score (`roundtrip_val_bpb`), the 0.002 a speedrun record moves the mean val
    loss by on the speedrun preset; None elsewhere."""
    if preset == GOLF_PRESET or metric == "roundtrip_val_bpb":
        return stats.GOLF_MIN_IMPROVEMENT
    if preset == SPEEDRUN_PRESET:
        return stats.SPEEDRUN_MIN_EFFECT
    return None


@dataclass(frozen=True)
class SeedResult:
    seed: int
    run_id: str
    status: str                  # the child run's sweep.status, or its MLflow status while it has none
    loss: float | None
    train_time_s: float | None

    @property
    def usable(self) -> bool:
        return self.status in RESULT_STATES and self.loss is not None and math.isfinite(self.loss)


@dataclass(frozen=True)
class Verdict:
    n: int
    mean: float
    std: float
    p_value: float
    passed: bool
    mean_time_s: float | None
    std_time_s: float | None


def judge(claim: Claim, results: list[SeedResult]) -> Verdict | None:
    """The t-test over the seeds that gave a loss, or None with fewer than two of them."""
    usable = [r for r in results if r.usable]
    if len(usable) < 2:
        return None
    losses = [r.loss for r in usable]
    test = stats.speedrun_test(losses, claim.threshold)
    times = _times(usable)
    time_std, time_mean = stats.std_mean(times) if times else (None, None)
    return Verdict(test.n, test.mean, test.std, test.p_value, test.passed, time_mean, time_std)


def _times(results: list[SeedResult]) -> list[float] | None:
    times = [r.train_time_s for r in results]
    return None if any(t is None for t in times) else times


def looks_markdown(rounds: sequential.Rounds) -> str:
    """How the sequential test went: each look's naive p-value against the level the design allows there,
    the p-value corrected for the looks beside the naive one, and the verdict."""
    design, course = rounds.design, rounds.courses[0]
    futility = ("" if design.min_effect is None else
                f"; it stops as not passing once a mean {design.min_effect:g} below the threshold is implausible "
                f"(power {design.power:g})")
    lines = ["#### Sequential test", "",
             f"The seeds ran in {rounds.round} round{'s' if rounds.round > 1 else ''}; after each, the test of the "
             f"seeds so far was held against the level the group-sequential design allows at that look (alpha "
             f"{design.alpha:g} spent as {design.alpha:g} x (n / {design.max_seeds})^{sequential.EFFICACY_RHO:g} "
             f"over at most {design.max_seeds} seeds), so the verdict keeps its type-I error of {design.alpha:g} "
             f"despite the looks{futility} (docs/confirmation.md).", ""]
    if course.looks:
        levels = design.efficacy_levels(tuple(course.looks))[0]
        lines += ["| look | seeds | p (naive) | level |", "| --- | --- | --- | --- |"]
        lines += [f"| {k} | {n} | {stats.format_p(p)} | {stats.format_p(level)} |"
                  for k, (n, p, level) in enumerate(zip(course.looks, course.p_values, levels), start=1)]
        lines.append("")
        corrected = rounds.sequential_p()[0]
        lines.append(f"p corrected for the {len(course.looks)} look{'s' if len(course.looks) > 1 else ''}: "
                     f"{stats.format_p(corrected)}; naive, as if the {course.looks[-1]} seeds had been planned: "
                     f"{stats.format_p(course.p_values[-1])}.")
    lines.append(f"Verdict: {verdict_text(rounds)}.")
    return "\n".join(lines) + "\n"


def verdict_text(rounds: sequential.Rounds) -> str:
    """Where the sequential test of a claim stands."""
    design, state = rounds.design, rounds.courses[0].state
    return {sequential.BETTER: f"passes at {design.alpha:g}",
            sequential.NOT_BETTER: "does not pass: stopped for futility",
            sequential.INCONCLUSIVE: f"does not pass at {design.alpha:g} within {design.max_seeds} seeds",
            }.get(state, "undecided")


def markdown(title: str, claim: Claim, results: list[SeedResult], rounds: sequential.Rounds | None = None) -> str:
    """The evidence block of the record READMEs, headed by a per-seed table; with the `rounds` of the
    sequential test, how they went."""
    lines = [f"### {title}", "", f"One-sided one-sample t-test of {claim.describe()}.", "",
             f"| seed | {claim.loss_metric} | training time (s) | status |", "| --- | --- | --- | --- |"]
    for r in results:
        loss = "-" if r.loss is None else f"{r.loss:.4f}"
        time_s = "-" if r.train_time_s is None else f"{r.train_time_s:.3f}"
        lines.append(f"| {r.seed} | {loss} | {time_s} | {r.status} |")
    usable = [r for r in results if r.usable]
    missing = len(results) - len(usable)
    lines.append("")
    if missing:
        lines += [f"{missing} of {len(results)} seeds gave no loss; the test covers the other "
                  f"{len(usable)}.", ""]
    after = "" if rounds is None else "\n" + looks_markdown(rounds)
    if len(usable) < 2:
        lines.append("Too few results for a t-test (it needs at least 2).")
        return "\n".join(lines) + "\n" + after
    return "\n".join(lines) + "\n" + claim.evidence([r.loss for r in usable], _times(usable)) + after
