"""One-GPU step time of the golf and speedrun presets, FP8 vs bf16 LM head, and an upstream baseline beside it.

    python bench/bench_gpu.py [--data DIR --tokenizer FILE] [--steps N] [--presets P ...] [--upstream TRAIN_GPT_PY]

For each preset it runs the trainer on one GPU (world size 1, so the global batch is done by gradient
accumulation) and reports step time, tokens/s, model FLOPs utilisation against the device's dense bf16
peak, and peak memory, once with the FP8 LM head and once with the plain bf16 head. Without --data the
runs use the generated corpus (vocabulary 1024), built offline in a few seconds: step time does not depend
on the text. With --upstream it also runs the parameter-golf baseline script at the golf shape on the same
shards and reports our golf step time (bf16 head, as theirs) over theirs (target <= 1.0). That script is
fetched for the run and never committed; it is driven by its own environment variables and its log is read
with the sweep's log parser.

Prints one JSON line. On CUDA it saves bench/results/gpu_<device>.json, rewritten after every run so that a
command stopped part-way keeps what it measured. Without CUDA it runs the same harness on CPU (for example
`--presets tiny --steps 30`, to check the harness before spending GPU time) and saves nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from runs import first, machine, run_trainer, save

from sweep.runlog.logparse import parse_log
from trainer.config import load_config
from trainer.data.generated import ensure_generated_corpus
from trainer.data.shards import list_shards
from trainer.model import GPT, model_flops_per_token

# Dense bf16 tensor-core peaks (no sparsity), by device-name substring.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
UPSTREAM_PRESET = "golf"
GENERATED_VOCAB = 1024


def peak_flops(device_name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in device_name), None)


def steady_step_ms(points: list[tuple[int, float]]) -> float:
    """Mean step time over the second half of the logged (step, train_time_ms) points: compiled and warm."""
    if len(points) < 2:
        raise ValueError(f"need at least two logged train steps to time, got {len(points)}")
    (s0, t0), (s1, t1) = points[(len(points) - 1) // 2], points[-1]
    return (t1 - t0) / (s1 - s0)


def ours(preset: str, data: list[str], steps: int, fp8: bool, tmp: Path) -> dict:
    overrides = [*data, f"train.iterations={steps}", "train.val_every=0", "train.log_every=5",
                 "train.max_wallclock_seconds=0", "train.val_tokens=1048576", f"fp8.enabled={str(fp8).lower()}",
                 "export.enabled=false"]
    _, evs = run_trainer(tmp / f"{preset}-{'fp8' if fp8 else 'bf16'}", ["--preset", preset, *overrides])
    step_ms = steady_step_ms([(e["step"], e["train_time_ms"]) for e in evs if e["event"] == "train"])
    cfg = load_config(preset)
    tokens_per_s = cfg.train.batch_tokens / (step_ms / 1000)
    peak = peak_flops(torch.cuda.get_device_name()) if torch.cuda.is_available() else None
    final = first(evs, "final")
    return {"preset": preset, "lm_head": "fp8" if fp8 else "bf16", "step_ms": step_ms, "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * model_flops_per_token(GPT.from_config(cfg), cfg.train.seq_len) / peak
            if peak else None, "peak_mem_mib": final["peak_mem_mib"], "val_loss": final["val_loss"],
            "status": final["status"]}


def upstream_data(data_dir: Path, tmp: Path) -> Path:
    """The shards under the names the upstream script globs for (fineweb_train_*, fineweb_val_*)."""
    linked = tmp / "upstream-data"
    linked.mkdir()
    for split in ("train", "val"):
        for i, shard in enumerate(list_shards(data_dir, split)):
            (linked / f"fineweb_{split}_{i:06d}.bin").symlink_to(shard.resolve())
    return linked


def upstream(script: str, data_dir: Path, tokenizer: str, steps: int, tmp: Path) -> dict:
    """The parameter-golf baseline at the golf shape, configured through its environment variables."""
    cfg = load_config(UPSTREAM_PRESET)
    env = {**os.environ, "DATA_PATH": str(upstream_data(data_dir, tmp)), "TOKENIZER_PATH": tokenizer,
           "ITERATIONS": str(steps), "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "5", "MAX_WALLCLOCK_SECONDS": "0",
           "RUN_ID": "bench", "VOCAB_SIZE": str(cfg.model.vocab_size), "NUM_LAYERS": str(cfg.model.num_layers),
           "MODEL_DIM": str(cfg.model.model_dim), "NUM_HEADS": str(cfg.model.num_heads),
           "NUM_KV_HEADS": str(cfg.model.num_kv_heads), "MLP_MULT": str(cfg.model.mlp_mult),
           "TRAIN_BATCH_TOKENS": str(cfg.train.batch_tokens), "TRAIN_SEQ_LEN": str(cfg.train.seq_len),
           "WARMUP_STEPS": str(cfg.compile.warmup_steps)}
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                          str(Path(script).resolve())], capture_output=True, text=True, cwd=tmp, env=env,
                         timeout=3600)
    log = parse_log(out.stdout + out.stderr)
    if out.returncode or not log.train:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
        return {"script": script, "returncode": out.returncode, "step_ms": None}
    return {"script": script, "returncode": 0, "step_ms": steady_step_ms([(p.step, p.train_time_ms) for p in log.train])}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", help="shard folder (default: the generated corpus, vocabulary 1024)")
    p.add_argument("--tokenizer", help="the SentencePiece model of --data")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--presets", nargs="+", default=["golf", "speedrun"])
    p.add_argument("--upstream", help="path to the parameter-golf train_gpt.py to run beside ours (CUDA only)")
    args = p.parse_args()
    if bool(args.data) != bool(args.tokenizer):
        p.error("--data and --tokenizer go together")
    if args.upstream and not Path(args.upstream).is_file():
        p.error(f"--upstream: no such file: {args.upstream}")
    if args.data:
        data_dir, tokenizer = Path(args.data), args.tokenizer
        data = [f"data.path={data_dir}", f"data.tokenizer={tokenizer}"]
    else:
        corpus = ensure_generated_corpus(None, min(GENERATED_VOCAB, *(load_config(n).model.vocab_size
                                                                      for n in args.presets)))
        data_dir, tokenizer, data = corpus.path, str(corpus.tokenizer), []
    on_gpu = torch.cuda.is_available()
    info = machine()
    result = {"bench": "gpu", **info, "cuda": torch.version.cuda, "steps": args.steps, "data": str(data_dir),
              "runs": []}

    def record(done: bool = False) -> None:
        if on_gpu:
            save(f"gpu_{info['device'].replace(' ', '_')}", result, echo=done)
        elif done:
            print(json.dumps(result))

    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            for fp8 in (True, False):
                result["runs"].append(ours(preset, data, args.steps, fp8, Path(tmp)))
                record()
        if args.upstream and on_gpu:
            theirs = upstream(args.upstream, data_dir, tokenizer, args.steps, Path(tmp))
            result["upstream"] = theirs
            mine = next((r for r in result["runs"] if r["preset"] == UPSTREAM_PRESET and r["lm_head"] == "bf16"), None)
            if mine and theirs["step_ms"]:
                result["golf_step_ratio_ours_over_upstream"] = mine["step_ms"] / theirs["step_ms"]
    record(done=True)


if __name__ == "__main__":
    main()
