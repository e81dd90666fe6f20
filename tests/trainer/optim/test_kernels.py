"""The Triton X·Xᵀ kernel, run by Triton's interpreter on CPU.

TRITON_INTERPRET must be set before triton is first imported, so the kernel runs in a fresh
subprocess. The interpreter computes tl.dot on bfloat16 from its raw uint16 storage (Triton 3.9),
so it checks float32 and float16; the kernel code is the same for bfloat16.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from paths import REPO

# Shapes around the 64 and 128 block sizes (both tile configurations), including ones that are not
# multiples of either, a single-tile case, and batched inputs.
SHAPES = [(5, 7), (70, 33), (64, 64), (130, 200), (3, 65, 40), (2, 129, 70)]

SCRIPT = """
import json, sys
import torch
from trainer.optim.kernels import xxt_triton
results = []
for shape in json.loads(sys.argv[1]):
    for dtype in (torch.float32, torch.float16):
        gen = torch.Generator().manual_seed(len(results))
        x = torch.randn(shape, generator=gen).to(dtype)
        got = xxt_triton(x)
        ref = x.double() @ x.double().mT
        # Also through a transposed (non-contiguous) view, as Newton-Schulz passes tall matrices.
        got_t = xxt_triton(x.mT.contiguous().mT)
        results.append(dict(
            shape=shape, dtype=str(dtype), out_shape=list(got.shape), out_dtype=str(got.dtype),
            err=((got.double() - ref).abs().max() / ref.abs().max()).item(),
            err_strided=((got_t.double() - ref).abs().max() / ref.abs().max()).item(),
        ))
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def interpreted_results():
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(SHAPES)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_xxt_kernel_matches_torch(interpreted_results):
    assert len(interpreted_results) == 2 * len(SHAPES)
    for r in interpreted_results:
        tol = 1e-5 if r["dtype"] == "torch.float32" else 2e-3
        assert r["out_shape"] == r["shape"][:-1] + [r["shape"][-2]], r
        assert r["out_dtype"] == r["dtype"], r
        assert r["err"] < tol and r["err_strided"] < tol, r
