"""The GPU benchmark's harness, run on CPU with the tiny preset so it is known to work before GPU time is spent."""
import json
import subprocess
import sys

import pytest
from paths import REPO

from trainer.config import load_config

BENCH = REPO / "bench" / "bench_gpu.py"


@pytest.mark.slow
def test_bench_gpu_harness_on_cpu():
    results = BENCH.parent / "results"
    before = set(results.glob("gpu_*.json"))
    out = subprocess.run([sys.executable, str(BENCH), "--presets", "tiny", "--steps", "20"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    batch_tokens = load_config("tiny").train.batch_tokens
    assert [(r["preset"], r["lm_head"]) for r in result["runs"]] == [("tiny", "fp8"), ("tiny", "bf16")]
    for run in result["runs"]:
        assert run["status"] == "ok"
        assert run["step_ms"] > 0
        assert abs(run["tokens_per_s"] - batch_tokens / (run["step_ms"] / 1000)) < 1e-6 * run["tokens_per_s"]
        assert run["mfu"] is None  # no device peak to measure against on CPU
    # a CPU check leaves no figures behind that could pass for GPU ones
    assert set(results.glob("gpu_*.json")) == before


def test_bench_gpu_rejects_data_without_tokenizer(tmp_path):
    out = subprocess.run([sys.executable, str(BENCH), "--data", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "--data and --tokenizer go together" in out.stderr
