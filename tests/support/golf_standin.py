"""A stand-in for a parameter-golf style `train_gpt.py`, for the env-mode sweep tests: it reads every
hyperparameter from the environment (ints with int(), floats with float(), flags with bool(int())), prints
parameter-golf's log line shapes, some behind torchrun's `[default0]:` prefix, and writes the same lines to
logs/<RUN_ID>.txt under its working folder. No torch, no sleeping: a run takes a fraction of a second.

Its losses follow from its hyperparameters (`val_loss`, `score_bpb`), so a test can tell which values a
run really read. `EVAL_SHAPE` picks the evaluations printed after training: `final` (default) the 2026-03
records' `final_int6_roundtrip` and `final_int6_sliding_window`; `quantized` the frontier records' since
2026-04: the diagnostics `pre-quantization post-ema` and `diagnostic quantized`, then, unless
`TTT_ENABLED=0`, the score `quantized_ttt_phased` (`ttt_bpb`).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping

PREFIX = "[default0]:"
BYTES_PER_TOKEN = 2.4


def hyperparameters(env: Mapping[str, str] = os.environ) -> dict:
    return {
        "run_id": env.get("RUN_ID", "standin"),
        "seed": int(env.get("SEED", 1337)),
        "data_path": env.get("DATA_PATH", "./data/datasets/fineweb10B_sp1024"),
        "iterations": int(env.get("ITERATIONS", 20)),
        "val_loss_every": int(env.get("VAL_LOSS_EVERY", 5)),
        "warmdown_iters": int(env.get("WARMDOWN_ITERS", 1200)),
        "matrix_lr": float(env.get("MATRIX_LR", 0.04)),
        "tie_embeddings": bool(int(env.get("TIE_EMBEDDINGS", "1"))),
        "eval_shape": env.get("EVAL_SHAPE", "final"),
        "ttt_enabled": bool(int(env.get("TTT_ENABLED", "1"))),
    }


def val_loss(hp: dict, step: int) -> float:
    """Lowest at WARMDOWN_ITERS 2400 and MATRIX_LR 0.05, a little worse untied."""
    offset = 0.1 * math.log(hp["warmdown_iters"] / 2400) ** 2 + 0.2 * math.log(hp["matrix_lr"] / 0.05) ** 2
    return 2.0 + 3.0 * math.exp(-step / 8.0) + offset + (0.0 if hp["tie_embeddings"] else 0.05)


def to_bpb(loss: float) -> float:
    return loss / math.log(2) / BYTES_PER_TOKEN


def score_bpb(hp: dict) -> float:
    """What the `final_int6_sliding_window` line, the last of EVAL_SHAPE=final, reports, to 8 decimals."""
    return round(to_bpb(val_loss(hp, hp["iterations"]) - 0.03), 8)


def ttt_bpb(hp: dict) -> float:
    """What the `quantized_ttt_phased` line reports, to 8 decimals."""
    return round(to_bpb(val_loss(hp, hp["iterations"]) - 0.05), 8)


def evaluations(hp: dict) -> list[str]:
    """The evaluation lines printed after training."""
    final = val_loss(hp, hp["iterations"])
    if hp["eval_shape"] == "quantized":
        lines = [f"diagnostic pre-quantization post-ema val_loss:{final - 0.01:.8f} "
                 f"val_bpb:{to_bpb(final - 0.01):.8f} eval_time:6ms",
                 f"diagnostic quantized val_loss:{final + 0.02:.8f} val_bpb:{to_bpb(final + 0.02):.8f} eval_time:9ms"]
        if hp["ttt_enabled"]:
            lines.append(f"quantized_ttt_phased val_loss:{final - 0.05:.8f} val_bpb:{ttt_bpb(hp):.8f} eval_time:40ms")
        return lines
    return [f"final_int6_roundtrip val_loss:{final + 0.01:.4f} val_bpb:{to_bpb(final + 0.01):.4f} eval_time:12ms",
            f"final_int6_roundtrip_exact val_loss:{final + 0.01:.8f} val_bpb:{to_bpb(final + 0.01):.8f}",
            f"final_int6_sliding_window val_loss:{final - 0.03:.4f} val_bpb:{to_bpb(final - 0.03):.4f} stride:64 "
            f"eval_time:20ms",
            f"final_int6_sliding_window_exact val_loss:{final - 0.03:.8f} val_bpb:{score_bpb(hp):.8f}"]


def main() -> int:
    hp = hyperparameters()
    logfile = Path("logs") / f"{hp['run_id']}.txt"
    logfile.parent.mkdir(exist_ok=True)
    out = open(logfile, "a", encoding="utf-8")

    def log(line: str, prefixed: bool = False) -> None:
        print(f"{PREFIX}{line}" if prefixed else line, flush=True)
        print(line, file=out, flush=True)

    print(logfile, flush=True)
    log("Hyperparameters:")
    for key in ("data_path", "warmdown_iters", "matrix_lr", "tie_embeddings"):
        log(f"  {key}: {hp[key]}")
    log(f"seed:{hp['seed']}")
    total, step_ms = hp["iterations"], 40.0
    for step in range(total + 1):
        ms = step * step_ms
        if step:
            log(f"step:{step}/{total} train_loss:{val_loss(hp, step) + 0.1:.4f} train_time:{ms:.0f}ms "
                f"step_avg:{step_ms:.2f}ms", prefixed=step % 2 == 0)
        if step == total or step % hp["val_loss_every"] == 0:
            loss = val_loss(hp, step)
            log(f"step:{step}/{total} val_loss:{loss:.4f} val_bpb:{to_bpb(loss):.4f} train_time:{ms:.0f}ms "
                f"step_avg:{ms / max(step, 1):.2f}ms", prefixed=step % 10 == 0)
    log("peak memory allocated: 321 MiB reserved: 384 MiB")
    model_bytes = 15_000_000 + hp["warmdown_iters"]
    log(f"Serialized model int6+zstd: {model_bytes} bytes")
    log("Code size: 4321 bytes")
    log(f"Total submission size int6+zstd: {model_bytes + 4321} bytes")
    for i, line in enumerate(evaluations(hp)):
        log(line, prefixed=i % 2 == 1)
    out.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
