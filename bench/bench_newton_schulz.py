"""Muon's Newton-Schulz on the block matrices of a preset: the symmetric X·Xᵀ kernel against the plain
matmul, and eager against torch.compile, per optimizer step (every matrix once).

    python bench/bench_newton_schulz.py [--preset golf] [--repeats N]

The shapes are read from the preset's model, so the figures are one rank's Newton-Schulz work for a
single-process run (with W ranks each does about 1/W of it). On CUDA the kernel is the Triton one the
trainer uses; elsewhere both sides are the plain matmul and only eager vs compiled is informative.
Prints one JSON line and saves bench/results/newton_schulz_<preset>_<device>.json.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from runs import machine, mean_ms, save

from trainer.config import load_config
from trainer.model import GPT, parameter_groups
from trainer.optim.kernels import xxt
from trainer.optim.muon import newton_schulz


def timed_ms(fn: Callable[[torch.Tensor], torch.Tensor], inputs: list[torch.Tensor], repeats: int) -> float:
    """Mean milliseconds for one pass over `inputs`, after one untimed pass (compilation, autotuning)."""
    def one_pass() -> None:
        for x in inputs:
            fn(x)
        if inputs[0].is_cuda:
            torch.cuda.synchronize()

    return mean_ms(one_pass, repeats)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="golf")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shapes = [tuple(w.shape) for w in parameter_groups(GPT.from_config(load_config(args.preset)))["matrix"]]
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(s, generator=gen).to(device) for s in shapes]
    # X·Xᵀ on the wide orientation, as Newton-Schulz forms it
    wide = [(g if g.size(0) <= g.size(1) else g.mT).bfloat16() for g in grads]

    t0 = time.perf_counter()
    compiled = torch.compile(newton_schulz, dynamic=False)
    for g in grads:
        compiled(g)
    compile_s = time.perf_counter() - t0

    worst = max((newton_schulz(g).float() - compiled(g).float()).abs().max().item() for g in grads)
    xxt_ms = timed_ms(xxt, wide, args.repeats)
    matmul_ms = timed_ms(lambda x: x @ x.mT, wide, args.repeats)
    eager_ms = timed_ms(newton_schulz, grads, args.repeats)
    compiled_ms = timed_ms(compiled, grads, args.repeats)
    info = machine()
    save(f"newton_schulz_{args.preset}_{info.get('device', 'cpu').replace(' ', '_')}",
         {"bench": "newton_schulz", **info, "preset": args.preset, "matrices": len(shapes),
          "xxt_kernel": "triton" if device == "cuda" else "matmul", "xxt_ms": xxt_ms, "matmul_ms": matmul_ms,
          "xxt_over_matmul": xxt_ms / matmul_ms, "ns_eager_ms": eager_ms, "ns_compiled_ms": compiled_ms,
          "compiled_over_eager": compiled_ms / eager_ms, "compile_s": compile_s,
          "max_abs_diff_compiled_vs_eager": worst})


if __name__ == "__main__":
    main()
