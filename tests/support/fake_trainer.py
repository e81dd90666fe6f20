"""A stand-in trainer for `sweep run --trainer-cmd`: any program that takes key=value overrides and writes
the run directory protocol (or prints reference log lines) can be swept. This one needs no torch, so a
sweep of it takes seconds; it also runs under torchrun (only rank 0 writes).

Keys (all optional):
  train.iterations (40), train.val_every (10), seed (0)
  fp8.x_s, fp8.w_s, fp8.grad_s: the loss is lowest at the PR #175 scales
  fake.quality: added to the loss as is (tests pick a clear ranking with it)
  fake.seed_noise (0): the std of an offset added to the loss, drawn from the seed and fake.quality, so the
    seeds of a configuration spread as a real trainer's do (independently of another configuration's)
  fake.step_s (0.01): seconds per step
  fake.format: events (events.jsonl) | nanogpt | golf (reference log lines on stdout)
  fake.crash_seed / fake.diverge_seed: crash (exit 1) / diverge at the middle step when seed equals it
  data.path: a folder that must exist, as for the trainer: otherwise exit 2 (bad input) naming the key
Any other key is accepted and ignored (tests put a marker in the command line with one).
The run directory is --run-dir if given, else $SWEEP_RUN_DIR.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

PR175 = {"fp8.x_s": 100 / 448, "fp8.w_s": 1.5 / 448, "fp8.grad_s": 0.75 / 448}


def parse(argv: list[str]) -> tuple[dict, str | None]:
    values, run_dir, it = {}, None, iter(argv)
    for arg in it:
        if arg == "--run-dir":
            run_dir = next(it)
        elif arg == "--preset":
            next(it)
        elif "=" in arg:
            key, _, raw = arg.partition("=")
            try:
                values[key] = json.loads(raw)
            except json.JSONDecodeError:
                values[key] = raw
        else:
            print(f"fake_trainer: bad argument {arg!r}", file=sys.stderr)
            sys.exit(2)
    return values, run_dir


def seed_offset(cfg: dict) -> float:
    noise = float(cfg.get("fake.seed_noise", 0.0))
    draw = random.Random(f"{cfg.get('seed', 0)}/{float(cfg.get('fake.quality', 0.0))}").gauss(0.0, 1.0)
    return noise * draw if noise else 0.0


def val_loss(cfg: dict, step: int) -> float:
    offset = sum(math.log(float(cfg.get(k, v)) / v) ** 2 for k, v in PR175.items()) * 0.05
    return 2.0 + 3.0 * math.exp(-step / 15.0) + offset + float(cfg.get("fake.quality", 0.0)) + seed_offset(cfg)


def main() -> int:
    cfg, run_dir = parse(sys.argv[1:])
    run_dir = Path(run_dir or os.environ["SWEEP_RUN_DIR"])
    if "data.path" in cfg and not Path(str(cfg["data.path"])).is_dir():
        print(f"error: data.path: no such folder: {cfg['data.path']}", file=sys.stderr)
        return 2
    rank0 = int(os.environ.get("RANK", "0")) == 0
    total, every = int(cfg.get("train.iterations", 40)), int(cfg.get("train.val_every", 10))
    step_s, fmt, seed = float(cfg.get("fake.step_s", 0.01)), cfg.get("fake.format", "events"), cfg.get("seed", 0)
    events = open(run_dir / "events.jsonl", "a", buffering=1) if rank0 and fmt == "events" else None

    def emit(name: str, **fields):
        if events:
            events.write(json.dumps({"event": name, "time": time.time(), **fields}) + "\n")

    if not rank0:
        time.sleep(step_s * total)
        return 0
    (run_dir / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
    emit("start", config=cfg, world_size=int(os.environ.get("WORLD_SIZE", "1")), device="cpu")
    status, loss = "ok", None
    for step in range(0, total + 1):
        ms = step * step_s * 1000.0
        if step == total // 2 and seed == cfg.get("fake.crash_seed"):
            print("Traceback (most recent call last):\nRuntimeError: fake crash at step", step, flush=True)
            return 1
        if step == total // 2 and seed == cfg.get("fake.diverge_seed"):
            emit("train", step=step, total_steps=total, train_loss=None, train_time_ms=ms, step_avg_ms=step_s * 1000)
            status = "diverged"
            break
        if step:
            emit("train", step=step, total_steps=total, train_loss=val_loss(cfg, step) + 0.1, train_time_ms=ms,
                 step_avg_ms=step_s * 1000)
        if step == total or (every and step and step % every == 0):
            loss = val_loss(cfg, step)
            bpb = loss / math.log(2) / 4
            emit("val", step=step, val_loss=loss, val_bpb=bpb, train_time_ms=ms, step_avg_ms=step_s * 1000)
            extra = f" val_bpb:{bpb:.4f}" if fmt == "golf" else ""
            print(f"step:{step}/{total} val_loss:{loss:.4f}{extra} train_time:{ms:.0f}ms "
                  f"step_avg:{step_s * 1000:.2f}ms", flush=True)
        time.sleep(step_s)
    if status == "diverged":
        emit("final", step=total // 2, val_loss=None, val_bpb=None, train_time_ms=total * step_s * 500,
             step_avg_ms=step_s * 1000, peak_mem_mib=1.0, status="diverged")
        print(f"step:{total // 2}/{total} val_loss:nan train_time:0ms step_avg:0.00ms", flush=True)
        return 0
    emit("final", step=total, val_loss=loss, val_bpb=loss / math.log(2) / 4, train_time_ms=total * step_s * 1000,
         step_avg_ms=step_s * 1000, peak_mem_mib=1.0, status=status)
    if fmt == "golf":
        print(f"final_int6_roundtrip_exact val_loss:{loss + 0.01:.8f} val_bpb:{loss / math.log(2) / 4 + 0.002:.8f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
