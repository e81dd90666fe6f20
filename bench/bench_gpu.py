"""One-GPU step time of the golf and speedrun presets, FP8 vs bf16 LM head, and an upstream baseline beside it.

    python bench/bench_gpu.py --data DIR --tokenizer FILE [--steps N] [--upstream TRAIN_GPT_PY]

For each preset it runs the trainer on one GPU (world size 1, so the global batch is done by gradient
accumulation) and reports step time, tokens/s, model FLOPs utilisation against the device's dense bf16
peak, and peak memory, once with the FP8 LM head and once with the plain bf16 head. With --upstream it
also runs the parameter-golf baseline script at the same shape in the same command and reports our step
time over theirs (target <= 1.0). That script is fetched for the run and never committed; it is driven by
its own environment variables and its log is read with the sweep's log parser.
Prints one JSON line and saves bench/results/gpu_<device>.json.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from runs import first, machine, run_trainer, save
from sweep.logparse import parse_log
from trainer.config import load_config
from trainer.model import GPT, model_flops_per_token

# Dense bf16 tensor-core peaks (no sparsity), by device-name substring.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None)


def ours(preset: str, data: str, tokenizer: str, steps: int, fp8: bool, tmp: Path) -> dict:
    overrides = [f"data.path={data}", f"data.tokenizer={tokenizer}", f"train.iterations={steps}",
                 "train.val_every=0", "train.log_every=10", "train.max_wallclock_seconds=0",
                 "train.val_tokens=1048576", f"fp8.enabled={str(fp8).lower()}", "export.enabled=false"]
    _, evs = run_trainer(tmp / f"{preset}-{'fp8' if fp8 else 'bf16'}", ["--preset", preset, *overrides])
    trains = [e for e in evs if e["event"] == "train"]
    a, b = trains[len(trains) // 2], trains[-1]  # the second half: compiled and warm
    step_ms = (b["train_time_ms"] - a["train_time_ms"]) / (b["step"] - a["step"])
    cfg = load_config(preset)
    flops_per_token = model_flops_per_token(GPT.from_config(cfg), cfg.train.seq_len)
    tokens_per_s = cfg.train.batch_tokens / (step_ms / 1000)
    peak = peak_flops(torch.cuda.get_device_name())
    final = first(evs, "final")
    return {"preset": preset, "lm_head": "fp8" if fp8 else "bf16", "step_ms": step_ms, "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * flops_per_token / peak if peak else None, "peak_mem_mib": final["peak_mem_mib"],
            "val_loss": final["val_loss"]}


def upstream(script: str, data: str, tokenizer: str, steps: int, tmp: Path) -> dict:
    """The parameter-golf baseline at the golf shape, configured through its environment variables."""
    env = {**os.environ, "DATA_PATH": data, "TOKENIZER_PATH": tokenizer, "ITERATIONS": str(steps),
           "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "10", "MAX_WALLCLOCK_SECONDS": "0", "RUN_ID": "bench",
           "VOCAB_SIZE": "1024"}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                          script], capture_output=True, text=True, cwd=tmp, env=env, timeout=3600)
    log = parse_log(out.stdout + out.stderr)
    a, b = log.train[len(log.train) // 2], log.train[-1]
    return {"script": script, "step_ms": (b.train_time_ms - a.train_time_ms) / (b.step - a.step),
            "returncode": out.returncode}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True, help="shard folder (sp1024 for golf; speedrun pads the vocabulary)")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--upstream", help="path to the parameter-golf train_gpt.py to run beside ours")
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA device")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [ours(preset, args.data, args.tokenizer, args.steps, fp8, Path(tmp))
                for preset in ("golf", "speedrun") for fp8 in (True, False)]
        result = {"bench": "gpu", **machine(), "cuda": torch.version.cuda, "steps": args.steps, "runs": rows}
        if args.upstream:
            theirs = upstream(args.upstream, args.data, args.tokenizer, args.steps, Path(tmp))
            golf_bf16 = next(r for r in rows if r["preset"] == "golf" and r["lm_head"] == "bf16")
            result["upstream"] = theirs
            result["golf_step_ratio_ours_over_upstream"] = golf_bf16["step_ms"] / theirs["step_ms"]
    save(f"gpu_{result['device'].replace(' ', '_')}", result)


if __name__ == "__main__":
    main()
