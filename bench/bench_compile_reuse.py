"""Compile reuse across trials: launch-to-first-step with a cold compile cache, then for a second trial that
differs only in the FP8 scales and shares the cache folder (as the sweep arranges for every trial on a node).

    python bench/bench_compile_reuse.py [--preset tiny] [key=value ...]

Target: warm <= 25% of cold. Prints one JSON line and saves bench/results/compile_reuse_<device>.json.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from runs import first, machine, run_trainer, save


def launch_to_first_step(run_dir: Path, args: list[str]) -> tuple[float, int]:
    t_launch, evs = run_trainer(run_dir, args)
    return first(evs, "train")["time"] - t_launch, first(evs, "final")["step"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tiny")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    subprocess.run([sys.executable, "-m", "trainer", "data", "generate", "--vocab-size", "512"], check=True,
                   capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--preset", args.preset, "compile.enabled=true", f"compile.cache_dir={tmp}/cache", "fp8.enabled=true",
                  "train.iterations=10", "train.val_every=0", "train.log_every=1", *args.overrides]
        cold, _ = launch_to_first_step(Path(tmp) / "cold", common)
        warm, _ = launch_to_first_step(Path(tmp) / "warm", [*common, "fp8.x_s=0.5", "fp8.w_s=0.01",
                                                            "fp8.grad_s=0.002", "seed=2"])
        eager, _ = launch_to_first_step(Path(tmp) / "eager", [*common, "compile.enabled=false"])
    info = machine()
    save(f"compile_reuse_{info.get('device', 'cpu').replace(' ', '_')}",
         {"bench": "compile_reuse", **info, "preset": args.preset, "cold_s": cold, "warm_s": warm,
          "eager_s": eager, "warm_over_cold": warm / cold, "target": 0.25})


if __name__ == "__main__":
    main()
