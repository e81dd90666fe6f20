"""A trainer stand-in for the multi-node test: every rank records what it sees, rank 0 speaks the protocol.

Run under torchrun by the sweep (`--trainer-cmd`); takes key=value overrides and ignores them.
"""
import json
import os
import time
from pathlib import Path

run_dir = Path(os.environ["SWEEP_RUN_DIR"])
rank = int(os.environ.get("RANK", "0"))
started = time.time()
time.sleep(3.0)  # long enough that trials placed at the same time overlap
(run_dir / f"rank{rank}.json").write_text(json.dumps({
    "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": started, "end": time.time()}))
if rank == 0:
    with open(run_dir / "events.jsonl", "a") as f:
        for event in ({"event": "val", "step": 1, "val_loss": 1.0, "train_time_ms": 1.0, "step_avg_ms": 1.0},
                      {"event": "final", "step": 1, "val_loss": 1.0, "train_time_ms": 1.0, "step_avg_ms": 1.0,
                       "status": "ok"}):
            f.write(json.dumps({**event, "time": time.time()}) + "\n")
