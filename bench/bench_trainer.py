"""Tiny-preset throughput on CPU with 1 and 2 processes, and the time from launch to the first training step.

    python bench/bench_trainer.py [--iterations N] [key=value ...]

Prints one JSON line and saves it as bench/results/trainer_cpu.json. The generated corpus is built (or found
in the cache) before timing starts, so the launch figure measures the trainer, not the one-off corpus build.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from runs import first, machine, run_trainer, save


def measure(nproc: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t_launch, evs = run_trainer(Path(tmp) / "run", ["--preset", "tiny", *overrides], nproc)
    trains = [e for e in evs if e["event"] == "train"]
    start, last = trains[0], trains[-1]
    # Throughput over the steady part of the run: from the first logged step to the last.
    return {
        "nproc": nproc,
        "tokens_per_s": (last["tokens"] - start["tokens"]) / ((last["train_time_ms"] - start["train_time_ms"]) / 1e3),
        "step_avg_ms": last["step_avg_ms"],
        "launch_to_first_step_s": start["time"] - t_launch,
        "final_val_loss": first(evs, "final")["val_loss"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    overrides = [f"train.iterations={args.iterations}", "train.val_every=0", "train.log_every=10", *args.overrides]
    subprocess.run([sys.executable, "-m", "trainer", "data", "generate", "--vocab-size", "512"], check=True,
                   capture_output=True)
    save("trainer_cpu", {"bench": "trainer_cpu", **machine(), "overrides": overrides,
                         "runs": [measure(n, overrides) for n in (1, 2)]})


if __name__ == "__main__":
    main()
