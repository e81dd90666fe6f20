"""Session-wide environment for every test and every process the tests start.

The generated corpus is built once per test session into a temporary cache (never the user's own cache),
and each trainer process uses one thread: the suite runs several processes at once on two cores, where
oversubscribed OpenMP threads make CPU training many times slower.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_CACHE = tempfile.TemporaryDirectory(prefix="gpt-sweep-test-cache-")
os.environ["GPT_SWEEP_CACHE"] = _CACHE.name
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def corpus_cache() -> str:
    return _CACHE.name


@pytest.fixture(scope="session")
def small_trainer_run(tmp_path_factory) -> Path:
    """Run directory of a real, very small run of our trainer (6 steps, val at 3 and 6), for the tests
    that read its train.log and events.jsonl."""
    run_dir = tmp_path_factory.mktemp("small-run")
    cmd = [sys.executable, "-m", "trainer", "--preset", "tiny", "--run-dir", str(run_dir),
           "model.num_layers=1", "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=1",
           "train.batch_tokens=1024", "train.seq_len=64", "train.micro_batches=1", "train.val_tokens=4096",
           "train.val_batch_tokens=4096", "train.iterations=6", "train.warmdown_iters=2", "train.val_every=3",
           "train.log_every=2"]
    proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir
