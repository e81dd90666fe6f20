"""`python -m trainer fp8 calibrate`: a short probe run that proposes the three FP8 scales (docs/fp8.md).

The rule: each scale is set so that the 99.9th percentile of |tensor / scale| over the probe's measured
steps (the largest of them) lands at a chosen value in the format's units. The defaults follow the
modded-nanogpt PR #175 thread: x at 448/4, w at 448/2, g at 448/10. The thread measured the gradient
against the e4m3 ceiling 448 although g is cast to e5m2 (max 57344) ("I just kept the same denominator
as the e4m3 values"), so g's default 44.8 is about 1/1280 of the e5m2 max, not 1/10 of it.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path

import yaml

from trainer import distributed, events
from trainer.config import Config, ConfigError, flatten, load_config, preset_names
from trainer.fp8.op import DEFAULT_GRAD_S, DEFAULT_W_S, DEFAULT_X_S
from trainer.fp8.ranges import KINDS, RangeStats, figures_of, format_max
from trainer.job import run_job
from trainer.protocol import EXIT_BAD_INPUT, EXIT_OK

SCALE_KEYS = {"x": "fp8.x_s", "w": "fp8.w_s", "g": "fp8.grad_s"}
PR175 = {"x": DEFAULT_X_S, "w": DEFAULT_W_S, "g": DEFAULT_GRAD_S}
DEFAULT_P999 = {"x": 448 / 4, "w": 448 / 2, "g": 448 / 10}
SPACE_DECADES = 1.0


@dataclass
class Probe:
    """What the probe run measured: per measured step, the scales used and the cast magnitudes."""
    steps: list[int] = field(default_factory=list)
    scales: list[dict[str, float]] = field(default_factory=list)
    figures: list[dict[str, dict[str, float]]] = field(default_factory=list)
    # |tensor| in absolute units (the sampled |tensor / scale| times the scale), per step and kind
    magnitudes: list[dict[str, object]] = field(default_factory=list)

    def record(self, step: int, scales: tuple[float, float, float], stats: RangeStats,
               figures: dict[str, dict[str, float]]) -> None:
        used = dict(zip(KINDS, scales))
        self.steps.append(step)
        self.scales.append(used)
        self.figures.append(figures)
        self.magnitudes.append({k: stats.sample(k).cpu() * used[k] for k in KINDS})

    def p999(self, kind: str) -> float:
        """The largest 99.9th percentile of |tensor| over the measured steps, in absolute units."""
        return max(f[kind]["p999_ratio"] * format_max(kind) * s[kind] for f, s in zip(self.figures, self.scales))

    def worst_at(self, kind: str, scale: float) -> dict[str, float]:
        """Each figure's worst value over the measured steps had `kind` been cast at `scale`, from the
        samples (the tensors are the probe's: the training itself would move a little with the scale)."""
        per_step = [figures_of(m[kind] / scale, kind) for m in self.magnitudes]
        return {name: max(f[name] for f in per_step) for name in per_step[0]}


def propose(probe: Probe, p999: dict[str, float]) -> dict[str, float]:
    return {kind: probe.p999(kind) / p999[kind] for kind in KINDS}


def run_probe(cfg: Config, run_dir: str | Path) -> tuple[int, str, Probe]:
    """Train with `cfg` (made by `probe_overrides`), recording every measured step; (exit code, message, probe)."""
    probe = Probe()

    def calibrate(d: distributed.Dist, log: events.RunLog):
        from trainer.train import Trainer
        log.echo = False
        trainer = Trainer(cfg, d, log)
        trainer.run(on_fp8_range=probe.record)
        return trainer

    code, message = run_job(cfg.device, run_dir, calibrate)
    return code, message, probe


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer fp8 calibrate",
        description="Run a few training steps with FP8 on, measure how x/x_s, w/w_s and g/grad_s use the "
                    "e4m3/e5m2 range, and propose scales that put each 99.9th percentile at a chosen value.",
        epilog="Extra arguments are config overrides key=value (the scales to probe at among them). "
               "Precedence: preset < --config < overrides.")
    p.add_argument("--preset", choices=preset_names())
    p.add_argument("--config", help="YAML file of config keys")
    p.add_argument("--steps", type=int, default=20, help="probe training steps (default 20)")
    p.add_argument("--points", type=int, default=4, help="how many of them are measured, evenly spread (default 4)")
    p.add_argument("--out", help="write a search space centred on the proposal to this YAML file")
    p.add_argument("--run-dir", help="where the probe's events.jsonl and train.log go (default runs/calibrate-<time>)")
    for kind, fmt in (("x", "e4m3"), ("w", "e4m3"), ("g", "e5m2")):
        p.add_argument(f"--{kind}-p999", type=float, default=DEFAULT_P999[kind], metavar="V",
                       help=f"where the 99.9th percentile of |{kind}/scale| goes, in {fmt} units "
                            f"(default {DEFAULT_P999[kind]:g})")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.steps < 1:
        raise ConfigError("--steps", f"must be at least 1, got {args.steps}")
    if not 1 <= args.points <= args.steps:
        raise ConfigError("--points", f"must lie in [1, --steps={args.steps}], got {args.points}")
    for kind in KINDS:
        value = getattr(args, f"{kind}_p999")
        if not 0 < value < format_max(kind):
            raise ConfigError(f"--{kind}-p999", f"must lie in (0, {format_max(kind):g}), got {value}")
    if args.out and not args.preset:
        raise ConfigError("--out", "a search space names its preset: give --preset")


def probe_overrides(cfg: Config, steps: int, points: int, world_size: int) -> list[str]:
    """What the probe changes: FP8 on, `steps` steps with `points` of them measured, nothing else run."""
    return ["fp8.enabled=true", f"train.iterations={steps}", f"fp8.stats_every={max(steps // points, 1)}",
            "train.val_every=0", f"train.val_tokens={cfg.train.seq_len * world_size + 1}",
            "train.max_wallclock_seconds=0", "export.enabled=false", "train.save_model=false",
            "compile.enabled=false", "compile.warmup_steps=0"]


def _table(probe: Probe, proposal: dict[str, float]) -> str:
    rows = [f"{'':4}{'':10}{'scale':>12}{'saturated':>11}{'flushed':>10}{'amax/max':>10}{'p99.9/max':>11}"]
    for kind in KINDS:
        given = {name: max(f[kind][name] for f in probe.figures) for name in probe.figures[0][kind]}
        scale = probe.scales[0][kind]
        for label, s, fig in (("measured", scale, given),
                              ("proposed", proposal[kind], probe.worst_at(kind, proposal[kind]))):
            rows.append(f"{kind if label == 'measured' else '':4}{label:10}{s:12.4g}{fig['saturated']:11.4g}"
                        f"{fig['flushed']:10.4g}{fig['amax_ratio']:10.4g}{fig['p999_ratio']:11.4g}")
    return "\n".join(rows)


def _round(value: float, rounding: str) -> float:
    """`value` to four significant digits, rounded down or up, so a range end keeps what it must hold."""
    d = Decimal(repr(value))
    return float(d.quantize(Decimal(1).scaleb(d.adjusted() - 3), rounding=rounding))


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()


def space_text(preset: str, fixed: dict, proposal: dict[str, float], p999: dict[str, float],
               command: str, steps: list[int]) -> str:
    """A search space over the three scales: a log range one decade each way of the proposal, widened
    to hold PR #175's value; first points the proposal, then PR #175."""
    lines = [f"# Proposed on {time.strftime('%Y-%m-%d')} by",
             f"#   {command}",
             "# Each scale puts the 99.9th percentile of |tensor / scale| (the largest over the probe's steps",
             f"# {', '.join(map(str, steps))}) at x {p999['x']:g}, w {p999['w']:g} (e4m3 units, max 448) and g {p999['g']:g}",
             "# (e5m2 units, max 57344). Ranges: one decade each way of the proposal, widened to hold PR #175's",
             "# values. First points: the proposal, then PR #175.",
             "name: fp8_calibrated", "metric: val_loss", "mode: min", f"preset: {preset}", "params:"]
    for kind in KINDS:
        low = _round(min(proposal[kind] / 10 ** SPACE_DECADES, PR175[kind]), ROUND_FLOOR)
        high = _round(max(proposal[kind] * 10 ** SPACE_DECADES, PR175[kind]), ROUND_CEILING)
        spec = {"type": "float", "low": low, "high": high, "log": True}
        lines.append(f"  {SCALE_KEYS[kind] + ':':12}{_flow(spec)}")
    lines.append(f"fixed: {_flow({**fixed, 'fp8.enabled': True})}")
    lines.append("points_to_evaluate:")
    for point in (proposal, PR175):
        lines.append(f"  - {_flow({SCALE_KEYS[k]: point[k] for k in KINDS})}")
    return "\n".join(lines) + "\n"


def _user_fixed(args: argparse.Namespace, cfg: Config) -> dict:
    """The keys the user set (config file and overrides), for the space's `fixed`; the scales are swept."""
    keys = set()
    if args.config:
        keys |= set(flatten(yaml.safe_load(Path(args.config).read_text()) or {}))
    keys |= {o.partition("=")[0].strip() for o in args.overrides}
    flat = flatten(cfg)
    return {k: flat[k] for k in sorted(keys) if k not in SCALE_KEYS.values() and flat[k] is not None}


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "calibrate":
        events.stderr("usage: python -m trainer fp8 calibrate [--preset P] [--config F] [--steps N] [--out SPACE.yaml] "
                      "[key=value ...]")
        return EXIT_BAD_INPUT
    args = _parser().parse_args(argv[1:])
    world_size = distributed.world_size_from_env()
    run_dir = args.run_dir or f"runs/calibrate-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        _check_args(args)
        user_cfg = load_config(args.preset, args.config, args.overrides, world_size=world_size)
        cfg = load_config(args.preset, args.config,
                          [*args.overrides, *probe_overrides(user_cfg, args.steps, args.points, world_size)],
                          world_size=world_size)
    except ConfigError as e:
        events.stderr(f"config error: {e}")
        return EXIT_BAD_INPUT
    p999 = {k: getattr(args, f"{k}_p999") for k in KINDS}
    code, message, probe = run_probe(cfg, run_dir)
    if code != EXIT_OK:
        events.stderr(message)
        return code
    if distributed.int_env("RANK") != 0:
        return EXIT_OK
    proposal = propose(probe, p999)
    print(f"fp8 calibrate: {args.preset or 'base'} config, {args.steps} steps, measured at steps {probe.steps}; "
          f"worst over those steps (fractions; amax and p99.9 as fractions of the format max)")
    print(_table(probe, proposal))
    print("proposal: " + " ".join(f"{SCALE_KEYS[k]}={proposal[k]:.6g}" for k in KINDS))
    if args.out:
        command = "python -m trainer fp8 calibrate " + " ".join(argv[1:])
        text = space_text(args.preset, _user_fixed(args, user_cfg), proposal, p999, command, probe.steps)
        Path(args.out).write_text(text)
        print(f"search space: {Path(args.out).resolve()}")
    print(f"probe run: {Path(run_dir).resolve()}")
    return EXIT_OK
