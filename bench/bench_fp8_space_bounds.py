"""How the FP8 casts use their range at the ends of a space's FP8 ranges: the measurement behind their bounds.

    python bench/bench_fp8_space_bounds.py [--space fp8_scales] [--preset speedrun] [--steps N] [--points P] [key=value ...]

Runs the calibration probe (`python -m trainer fp8 calibrate`'s run, at PR #175's scales unless overridden)
and prints, for each FP8 scale the space sweeps, the worst saturated and flushed fractions and the 99.9th
percentile (as a fraction of the format max) over the measured steps had that tensor been cast at the
range's low end, at PR #175's value and at the high end. Saves bench/results/fp8_space_bounds_<preset>.json.
The figures are predictions on the probe's own tensors (a training at another scale would drift a little).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from runs import machine, save

from sweep.inputs.space import load_space
from trainer.config import load_config
from trainer.fp8.calibrate import PR175, SCALE_KEYS, probe_overrides, run_probe

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--space", default="fp8_scales")
    p.add_argument("--preset", default="speedrun")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--points", type=int, default=3)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    space = load_space(SPACES / f"{args.space}.yaml")
    base = load_config(args.preset, overrides=args.overrides)
    cfg = load_config(args.preset, overrides=[*args.overrides, *probe_overrides(base, args.steps, args.points, 1)])
    with tempfile.TemporaryDirectory() as tmp:
        code, message, probe = run_probe(cfg, Path(tmp) / "probe")
    if code:
        raise SystemExit(message)
    rows = []
    print(f"{args.space} at the {args.preset} preset, {args.steps} steps, measured at steps {probe.steps} "
          f"(worst over them)")
    print(f"{'key':12}{'where':>8}{'scale':>12}{'saturated':>12}{'flushed':>12}{'p99.9/max':>12}")
    for kind, key in SCALE_KEYS.items():
        if key not in space.params:
            continue
        param = space.params[key]
        for where, scale in (("low", param.low), ("PR #175", PR175[kind]), ("high", param.high)):
            fig = probe.worst_at(kind, scale)
            rows.append({"key": key, "where": where, "scale": scale, **fig})
            print(f"{key:12}{where:>8}{scale:12.4g}{fig['saturated']:12.4g}{fig['flushed']:12.4g}"
                  f"{fig['p999_ratio']:12.4g}")
    save(f"fp8_space_bounds_{args.preset}", {"bench": "fp8_space_bounds", **machine(), "space": args.space,
                                             "preset": args.preset, "overrides": args.overrides,
                                             "steps": probe.steps, "rows": rows}, echo=False)


if __name__ == "__main__":
    main()
