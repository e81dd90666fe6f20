"""Export figures on CPU: artifact bytes per scheme, the int6+zstd22 / int8+zlib9 size ratio, the
post-quantization val_bpb gap, and compress / load times.

    python bench/bench_export.py [--golf-iterations N] [--tiny-run DIR] [--golf-run DIR] [--val-tokens N]

Two models, each trained with the real trainer (or taken from a finished run directory): the tiny preset
as it is, and the golf shape (9 x 512, vocab 1024, tied) after a few CPU steps on a small batch. Each is
exported under every scheme / embedding combination, read back into a fresh model and evaluated with the
trainer's own validation. The tiny model's tensors are all at or under the 65,536-element passthrough
size, so it is also exported with every matrix quantized ("all-quantized") to exercise the quantizers.
Targets: ratio <= 0.80 and, with the embedding in fp16, a val_bpb gap <= 0.002.
Prints a table and saves bench/results/bench_export.json.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer import (
    distributed,
    protocol,
)
from trainer.config import load_config
from trainer.data.source import resolve_data
from trainer.evaluation import Evaluator
from trainer.export.accounting import code_bytes
from trainer.export.artifact import load_artifact, save_artifact
from trainer.export.quantize import ExportRules
from trainer.export.run import fresh_model_like
from trainer.model import EMBED_WEIGHT, GPT

RESULTS = REPO / "bench" / "results"
CONFIGS = [("int8_zlib", "int8"), ("int8_zlib", "fp16"), ("int6_zstd", "int8"), ("int6_zstd", "fp16"),
           ("int6_zstd", "int6")]
RATIO_TARGET = 0.80
GAP_TARGET = 0.002


def golf_overrides(iterations: int) -> list[str]:
    return ["compile.enabled=false", "train.max_wallclock_seconds=0", f"train.iterations={iterations}",
            f"train.warmdown_iters={max(1, iterations // 3)}", "train.batch_tokens=2048", "train.seq_len=256",
            "train.micro_batches=1", "train.val_every=0", "train.log_every=5",
            f"optim.muon_momentum_warmup_steps={iterations}"]


def train(preset: str, overrides: list[str], run_dir: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trainer", "--preset", preset, "--run-dir", str(run_dir),
                           "export.enabled=false", *overrides], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"training {preset} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def load_trained(run_dir: Path, val_tokens: int) -> tuple[GPT, Evaluator]:
    cfg = load_config(None, run_dir / protocol.CONFIG_FILE,
                      [f"train.val_tokens={val_tokens}", f"train.val_batch_tokens={val_tokens}"])
    d = distributed.setup("cpu")
    state = torch.load(run_dir / protocol.MODEL_FILE, map_location="cpu", weights_only=True)
    model = GPT.from_config(cfg, untied=EMBED_WEIGHT in state)
    model.load_state_dict(state, strict=True)
    return model, Evaluator(cfg, d, resolve_data(cfg, d))


def measure(model: GPT, evaluator: Evaluator, rules: ExportRules, folder: Path) -> dict:
    path = folder / f"{rules.scheme}-{rules.embed}-{rules.passthrough_max_numel}.ptz"
    info = save_artifact(model.state_dict(), path, rules=rules, write_manifest=False)
    start = time.perf_counter()
    fresh = fresh_model_like(model, evaluator.cfg)
    fresh.load_state_dict(load_artifact(path), strict=True)
    load_s = time.perf_counter() - start
    result = evaluator.evaluate(fresh)
    return {"scheme": rules.scheme, "embed": rules.embed, "passthrough_max_numel": rules.passthrough_max_numel,
            "artifact_bytes": info.artifact_bytes, "payload_bytes": info.payload_bytes,
            "tensor_counts": info.tensor_counts, "compress_s": info.compress_seconds, "load_s": load_s,
            "roundtrip_val_loss": result.loss, "roundtrip_val_bpb": result.bpb}


def bench_model(name: str, run_dir: Path, val_tokens: int, passthrough_sizes: list[int], folder: Path) -> dict:
    model, evaluator = load_trained(run_dir, val_tokens)
    base = evaluator.evaluate(model)
    rows = []
    for size in passthrough_sizes:
        for scheme, embed in CONFIGS:
            row = measure(model, evaluator, ExportRules(scheme=scheme, embed=embed, passthrough_max_numel=size),
                          folder)
            row["val_bpb_gap"] = row["roundtrip_val_bpb"] - base.bpb
            rows.append(row)
    for row in rows:
        baseline = next(r for r in rows if r["scheme"] == "int8_zlib" and r["embed"] == row["embed"]
                        and r["passthrough_max_numel"] == row["passthrough_max_numel"]) \
            if row["embed"] != "int6" else None
        row["ratio_vs_int8_zlib_same_embed"] = (row["artifact_bytes"] / baseline["artifact_bytes"]
                                                if baseline else None)
    return {"model": name, "run_dir": str(run_dir), "params": sum(p.numel() for p in model.parameters()),
            "val_tokens": val_tokens, "pre_quant_val_loss": base.loss, "pre_quant_val_bpb": base.bpb, "rows": rows}


def print_table(result: dict) -> None:
    print(f"\n{result['model']}: {result['params']:,} params, pre-quant val_bpb {result['pre_quant_val_bpb']:.4f} "
          f"over {result['val_tokens']} val tokens")
    print(f"{'scheme':10} {'embed':5} {'passthru':>8} {'bytes':>10} {'ratio':>6} {'bpb gap':>9} "
          f"{'compress s':>10} {'load s':>7}")
    for r in result["rows"]:
        ratio = f"{r['ratio_vs_int8_zlib_same_embed']:.3f}" if r["ratio_vs_int8_zlib_same_embed"] else "-"
        print(f"{r['scheme']:10} {r['embed']:5} {r['passthrough_max_numel']:>8} {r['artifact_bytes']:>10} "
              f"{ratio:>6} {r['val_bpb_gap']:>+9.5f} {r['compress_s']:>10.2f} {r['load_s']:>7.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny-run", type=Path, help="a finished tiny run directory to use instead of training one")
    p.add_argument("--golf-run", type=Path, help="a finished golf-shaped run directory to use instead")
    p.add_argument("--golf-iterations", type=int, default=30, help="CPU training steps of the golf-shaped model")
    p.add_argument("--val-tokens", type=int, default=16384, help="validation tokens per evaluation")
    args = p.parse_args()
    torch.manual_seed(0)
    results, train_seconds = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plan = [("tiny", "tiny", [], args.tiny_run, [65_536, 0]),
                ("golf", "golf", golf_overrides(args.golf_iterations), args.golf_run, [65_536])]
        for name, preset, overrides, run_dir, sizes in plan:
            trained_here = run_dir is None
            if trained_here:
                run_dir = tmp / name
                train_seconds[name] = train(preset, overrides, run_dir)
            result = bench_model(name, run_dir, args.val_tokens, sizes, tmp)
            result["trained"] = {"preset": preset, "overrides": overrides} if trained_here else None
            print_table(result)
            results.append(result)
    golf = next(r for r in results if r["model"] == "golf")
    by = {(r["scheme"], r["embed"]): r for r in golf["rows"]}
    summary = {
        "golf_ratio_int6_zstd_over_int8_zlib_embed_fp16": by[("int6_zstd", "fp16")]["ratio_vs_int8_zlib_same_embed"],
        "golf_ratio_int6_zstd_over_int8_zlib_embed_int8": by[("int6_zstd", "int8")]["ratio_vs_int8_zlib_same_embed"],
        "golf_val_bpb_gap_int6_zstd_embed_fp16": by[("int6_zstd", "fp16")]["val_bpb_gap"],
        "ratio_target": RATIO_TARGET, "gap_target": GAP_TARGET,
    }
    summary["ratio_met"] = summary["golf_ratio_int6_zstd_over_int8_zlib_embed_fp16"] <= RATIO_TARGET
    summary["gap_met"] = summary["golf_val_bpb_gap_int6_zstd_embed_fp16"] <= GAP_TARGET
    out = {"bench": "export", "command": " ".join(["python", "bench/bench_export.py", *sys.argv[1:]]),
           "host": platform.node(), "threads": torch.get_num_threads(), "torch": torch.__version__,
           "code_bytes": code_bytes(), "train_seconds": train_seconds, "summary": summary, "models": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_export.json").write_text(json.dumps(out, indent=2) + "\n")
    print("\n" + json.dumps(summary))


if __name__ == "__main__":
    main()
