"""Tiny-preset throughput on CPU with 1 and 2 processes, and the time from launch to the first training step.

    python bench/bench_trainer.py [--iterations N] [key=value ...]

Prints one JSON line and saves it under bench/results/. The generated corpus is built (or found in the
cache) before timing starts so the launch figure measures the trainer, not the one-off corpus build.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def launch_command(nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "trainer"]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m",
            "trainer"]


def read_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def measure(nproc: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        t_launch = time.time()
        subprocess.run([*launch_command(nproc), "--preset", "tiny", "--run-dir", str(run_dir), *overrides],
                       check=True, capture_output=True, timeout=1800)
        evs = read_events(run_dir)
    trains = [e for e in evs if e["event"] == "train"]
    first, last = trains[0], trains[-1]
    # Throughput over the steady part of the run: from the first logged step to the last.
    steady_tokens = last["tokens"] - first["tokens"]
    steady_ms = last["train_time_ms"] - first["train_time_ms"]
    return {
        "nproc": nproc,
        "tokens_per_s": steady_tokens / (steady_ms / 1000.0),
        "step_avg_ms": last["step_avg_ms"],
        "launch_to_first_step_s": first["time"] - t_launch,
        "final_val_loss": next(e for e in evs if e["event"] == "final")["val_loss"],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    overrides = [f"train.iterations={args.iterations}", "train.val_every=0", "train.log_every=10", *args.overrides]
    subprocess.run([sys.executable, "-m", "trainer", "data", "generate", "--vocab-size", "512"], check=True,
                   capture_output=True)
    runs = [measure(n, overrides) for n in (1, 2)]
    result = {"bench": "trainer_cpu", "host": platform.node(), "cpus": torch.get_num_threads(),
              "torch": torch.__version__, "overrides": overrides, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "trainer_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
