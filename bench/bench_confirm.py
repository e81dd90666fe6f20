"""Error rates and seeds of the sequential confirmation against the fixed design, by simulation (no training).

    python bench/bench_confirm.py [--sims 10000] [--std 0.0015] [--effect 0.002] [--seed 0]

Each simulated confirmation draws per-seed values with Gaussian seed noise (std 0.0015, the modded-nanogpt
records' spread) for a baseline and K configurations (K = 1 and 3) whose value on a seed correlates with
the baseline's on the same seed (pairing correlation 0 and 0.5), each configuration better than the
baseline by the same true effect: 0, 0.5x, 1x or 2x the effect of interest (0.002, the speedrun's
`--min-effect`). Alpha 0.01, power 0.8.

- The fixed design runs every configuration on the seeds that the one-sided paired t-test at alpha / K
  needs for the power at the effect of interest (noncentral t), and judges them with Holm at alpha: what
  `--confirm-fixed` does with that many seeds.
- The sequential design (sweep.report.sequential: its levels, Holm's rule and its verdicts) runs rounds of
  one seed up to the maximum that decides the effect of interest (`planned_seeds`: its efficacy and
  futility bounds meet at the last seed).

Printed per design: the type-I error (the chance that some configuration is called better when none is,
with its 95% Monte-Carlo interval; target <= alpha), the power at 1x (the chance that a configuration is
called better, with an interval that treats the K configurations of a simulation as independent; target
>= 0.8), the mean and 90th percentile of the seeds a configuration ran, their ratio sequential / fixed, and
the mean runs of a whole confirmation (the baseline's included). Targets: the sequential design's
mean seeds at most 60% of the fixed design's at a true effect of 0 and at most 85% at 1x. Then one JSON line
(K = 1, correlation 0), saved with the table as bench/results/bench_confirm.json.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy import special

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sweep.report import sequential as sq

RESULTS = REPO / "bench" / "results"
ALPHA, POWER = sq.ALPHA, sq.POWER
EFFECTS = (0.0, 0.5, 1.0, 2.0)          # true effect, in units of the effect of interest
CONFIGS = (1, 3)
CORRELATIONS = (0.0, 0.5)
TARGET_NULL, TARGET_EFFECT = 0.60, 0.85


def improvements(rng, sims: int, k: int, seeds: int, effect: float, std: float, correlation: float) -> np.ndarray:
    """Per simulation, configuration and seed: configuration minus baseline, the better the higher."""
    base = rng.standard_normal((sims, 1, seeds))
    own = rng.standard_normal((sims, k, seeds))
    config = effect + std * (correlation * base + math.sqrt(1 - correlation ** 2) * own)
    return config - std * base


def t_stats(sums: np.ndarray, squares: np.ndarray, n: int, shift: float) -> np.ndarray:
    """The one-sample t-statistics of the first n seeds against `shift`, from the running sums of the values
    and of their squares."""
    mean = sums[..., n - 1] / n
    sd = np.sqrt(np.maximum(squares[..., n - 1] - n * mean * mean, 0.0) / (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return (mean - shift) / (sd / math.sqrt(n))


def fixed(d: np.ndarray, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """(better per configuration, seeds per configuration) of the fixed design: Holm on the naive p-values."""
    p = special.stdtr(seeds - 1, -t_stats(np.cumsum(d, -1), np.cumsum(d * d, -1), seeds, 0.0))
    k = d.shape[1]
    crossed = np.stack([p <= level for level in sq.holm_levels(ALPHA, k)], axis=-1)
    return sq.holm_better(crossed), np.full(p.shape, seeds)


def sequential(d: np.ndarray, design: sq.Design) -> tuple[np.ndarray, np.ndarray]:
    """(better per configuration, seeds per configuration) of the sequential design, round by round."""
    sims, k, top = d.shape
    looks = tuple(range(sq.FIRST_LOOK, top + 1))
    efficacy = np.array(design.efficacy_levels(looks))          # Holm level x look
    futility = np.array(design.futility_levels(looks))
    state = np.full((sims, k), sq.RUNNING, dtype=np.int8)
    crossed = np.zeros((sims, k, k), dtype=bool)
    sums, squares = np.cumsum(d, -1), np.cumsum(d * d, -1)
    used = np.full((sims, k), top)
    for look, n in enumerate(looks):
        running = state == sq.RUNNING
        if not running.any():
            break
        p = special.stdtr(n - 1, -t_stats(sums, squares, n, 0.0))
        crossed |= running[..., None] & (p[..., None] <= efficacy[None, None, :, look])
        futile = special.stdtr(n - 1, t_stats(sums, squares, n, design.min_effect)) <= futility[look]
        state = sq.round_verdicts(state, crossed, futile, np.full((sims, k), n == top))
        used[running & (state != sq.RUNNING)] = n
    return state == sq.BETTER, used


def scenario(rng, sims: int, k: int, correlation: float, effect: float, std: float, interest: float) -> dict:
    diff_std = std * math.sqrt(2 - 2 * correlation)
    n_fixed = sq.fixed_seeds(interest, diff_std, ALPHA / k, POWER)
    n_max = sq.planned_seeds(interest, diff_std, ALPHA, POWER, k)
    d = improvements(rng, sims, k, max(n_fixed, n_max), effect * interest, std, correlation)
    out = {"configs": k, "correlation": correlation, "effect": effect, "fixed_seeds": n_fixed, "max_seeds": n_max}
    for name, (better, used) in (("fixed", fixed(d[..., :n_fixed], n_fixed)),
                                 ("sequential", sequential(d[..., :n_max], sq.Design(n_max, interest, ALPHA, POWER, k)))):
        out[name] = {"any_better": float(better.any(axis=1).mean()), "better": float(better.mean()),
                     "mean_seeds": float(used.mean()), "p90_seeds": float(np.percentile(used, 90)),
                     # the baseline runs as long as any configuration does
                     "mean_runs": float((used.sum(axis=1) + used.max(axis=1)).mean())}
    return out


def interval(p: float, sims: int) -> tuple[float, float]:
    half = 1.96 * math.sqrt(p * (1 - p) / sims)
    return max(0.0, p - half), p + half


def table(rows: list[dict], sims: int) -> str:
    lines = [f"{'K':>2} {'corr':>5} {'effect':>6} | {'design':<10} {'seeds max':>9} | {'type-I error [95% MC]':>23} "
             f"| {'power [95% MC]':>21} | {'mean seeds':>10} {'p90':>4} | {'seq/fixed':>9} | {'runs':>5}"]
    lines.append("-" * len(lines[0]))
    for row in rows:
        for name in ("fixed", "sequential"):
            r = row[name]
            error = power = ""
            if row["effect"] == 0.0:
                low, high = interval(r["any_better"], sims)
                error = f"{r['any_better']:.4f} [{low:.4f}, {high:.4f}]"
            if row["effect"] == 1.0:
                low, high = interval(r["better"], sims * row["configs"])
                power = f"{r['better']:.3f} [{low:.3f}, {high:.3f}]"
            seeds = row["fixed_seeds"] if name == "fixed" else row["max_seeds"]
            ratio = f"{r['mean_seeds'] / row['fixed']['mean_seeds']:.2f}" if name == "sequential" else ""
            lines.append(f"{row['configs']:>2} {row['correlation']:>5.1f} {row['effect']:>5.1f}x | {name:<10} "
                         f"{seeds:>9} | {error:>23} | {power:>21} | {r['mean_seeds']:>10.2f} {r['p90_seeds']:>4.0f} "
                         f"| {ratio:>9} | {r['mean_runs']:>5.1f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sims", type=int, default=10_000)
    p.add_argument("--std", type=float, default=0.0015, help="seed std of one run's value")
    p.add_argument("--effect", type=float, default=0.002, help="the effect of interest (--min-effect)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    rows = [scenario(rng, args.sims, k, c, e, args.std, args.effect)
            for k in CONFIGS for c in CORRELATIONS for e in EFFECTS]
    elapsed = time.perf_counter() - start
    print(f"{args.sims} simulated confirmations per row: seed std {args.std:g}, effect of interest {args.effect:g}, "
          f"alpha {ALPHA:g}, power {POWER:g}; {elapsed:.1f} s")
    text = table(rows, args.sims)
    print(text)
    main_rows = {r["effect"]: r for r in rows if r["configs"] == 1 and r["correlation"] == 0.0}
    null, one = main_rows[0.0], main_rows[1.0]
    result = {
        "type1_error": null["sequential"]["any_better"],
        "power": one["sequential"]["better"],
        "seeds_ratio_null": null["sequential"]["mean_seeds"] / null["fixed"]["mean_seeds"],
        "seeds_ratio_effect": one["sequential"]["mean_seeds"] / one["fixed"]["mean_seeds"],
        "fixed_type1_error": null["fixed"]["any_better"], "fixed_power": one["fixed"]["better"],
        "sims": args.sims, "std": args.std, "effect_of_interest": args.effect, "alpha": ALPHA,
        "target_power": POWER, "seconds": round(elapsed, 2), "rows": rows, "table": text,
    }
    met = (result["type1_error"] <= ALPHA and result["power"] >= POWER
           and result["seeds_ratio_null"] <= TARGET_NULL and result["seeds_ratio_effect"] <= TARGET_EFFECT)
    result["targets_met"] = met
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_confirm.json").write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: result[k] for k in ("type1_error", "power", "seeds_ratio_null", "seeds_ratio_effect")}
    print(json.dumps({**summary, "targets_met": met}))


if __name__ == "__main__":
    main()
