"""What the FP8 head costs on this CPU: the matmul kernels, the tiny preset with FP8 on and off, and the
range diagnostics at the golf shape.

    python bench/bench_fp8.py [--iterations N]

1. One 1024x64x512 product (the size of a tiny-preset head matmul): float32, `torch._scaled_mm` with
   e4m3 x e4m3 and e5m2 x e4m3, and the float32 product of the upcast fp8 copies that the trainer uses
   on CPU. `_scaled_mm`'s CPU speed depends on the x86 model; the upcast path does not.
2. Tiny preset step time with the FP8 head on (diagnostics off) against off; target ratio <= 1.5.
3. Golf-shaped model (9 x 512, vocab 1024, 4096-token batch) with FP8 on: step time with the range
   diagnostics measured every step against never; the per-measurement cost amortised over the golf
   preset's default of one measurement every train.log_every = 200 steps.
Prints one JSON line and saves bench/results/fp8_cpu.json.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from runs import machine, mean_ms, run_trainer, save

from trainer.fp8.op import E4M3, E5M2, scaled_mm, upcast_mm


def kernels() -> dict:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(1024, 64, generator=gen), torch.randn(512, 64, generator=gen)
    one = torch.tensor(1.0)
    a8, b8, g8 = a.to(E4M3), b.to(E4M3), a.to(E5M2)
    fp32 = mean_ms(lambda: a @ b.T, 50)
    figures = {"fp32_ms": fp32,
               "scaled_mm_e4m3_e4m3_ms": mean_ms(lambda: scaled_mm(a8, b8.T, one, one, torch.float32), 2),
               "scaled_mm_e5m2_e4m3_ms": mean_ms(lambda: scaled_mm(g8, b8.T, one, one, torch.float32), 5),
               "upcast_ms": mean_ms(lambda: upcast_mm(a8, b8.T, one, one, torch.float32), 50)}
    return {**figures, **{k.replace("_ms", "_over_fp32"): v / fp32 for k, v in figures.items() if k != "fp32_ms"}}


def step_ms(args: list[str]) -> float:
    """Mean step time over the steady part of a run: from the first logged step to the last."""
    with tempfile.TemporaryDirectory() as tmp:
        _, evs = run_trainer(Path(tmp) / "run", args)
    trains = [e for e in evs if e["event"] == "train"]
    return (trains[-1]["train_time_ms"] - trains[0]["train_time_ms"]) / (trains[-1]["step"] - trains[0]["step"])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=60)
    args = p.parse_args()
    subprocess.run([sys.executable, "-m", "trainer", "data", "generate", "--vocab-size", "512"], check=True,
                   capture_output=True)
    tiny = ["--preset", "tiny", f"train.iterations={args.iterations}", "train.val_every=0", "train.log_every=10"]
    off = step_ms([*tiny, "fp8.enabled=false"])
    on = step_ms([*tiny, "fp8.enabled=true", "fp8.stats_every=0"])
    golf = ["--preset", "golf", "device=cpu", "train.iterations=12", "train.batch_tokens=4096", "train.micro_batches=1",
            "train.max_wallclock_seconds=0", "train.val_every=0", "train.log_every=2", "train.val_tokens=4097",
            "compile.enabled=false", "compile.warmup_steps=0", "export.enabled=false", "train.save_model=false",
            "fp8.enabled=true"]
    plain = step_ms([*golf, "fp8.stats_every=0"])
    measured = step_ms([*golf, "fp8.stats_every=1"])
    result = {"bench": "fp8_cpu", **machine(), "kernels": kernels(),
              "tiny": {"fp8_off_step_ms": off, "fp8_on_step_ms": on, "on_over_off": on / off},
              "golf_diagnostics": {"off_step_ms": plain, "every_step_ms": measured,
                                   "cost_per_measurement_ms": measured - plain,
                                   "overhead_every_step": measured / plain - 1,
                                   "overhead_every_200_steps": (measured - plain) / 200 / plain}}
    save("fp8_cpu", result)


if __name__ == "__main__":
    main()
