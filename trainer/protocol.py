"""The run protocol: what a trainer run leaves in its run directory and how it exits (docs/architecture.md).

The trainer writes it and the sweep reads it, and both import the names from here, so they cannot drift
apart. Standard library only: the sweep imports this without loading torch.
"""
from __future__ import annotations

# Files rank 0 writes into the run directory.
EVENTS_FILE = "events.jsonl"   # one JSON object per line, flushed per line, only appended to
LOG_FILE = "train.log"         # the human log, in the reference line shapes
CONFIG_FILE = "config.yaml"    # the resolved config
MODEL_FILE = "model.pt"        # the final weights (unless train.save_model is off)
ARTIFACT_FILES = {"int6_zstd": "model.int6.ptz", "int8_zlib": "model.int8.ptz"}  # export.scheme -> file

# Event names (every event has `event` and `time`; most have `step`).
START, TRAIN, VAL, UNTIE, FP8, EXPORT, FINAL, ERROR = "start", "train", "val", "untie", "fp8", "export", "final", "error"
STEP_FIELDS = ("train_loss", "val_loss", "val_bpb", "train_time_ms", "step_avg_ms")  # of `train` and `val`
FINAL_FIELDS = ("val_loss", "val_bpb", "train_time_ms", "step_avg_ms", "peak_mem_mib", "step")

# The `status` of the `final` event: how training ended. A diverged run is a result, not a crash.
OK, DIVERGED, WALLCLOCK_CAP = "ok", "diverged", "wallclock_cap"
FINAL_STATUSES = (OK, DIVERGED, WALLCLOCK_CAP)

# Exit codes: anything other than these two is a crash.
EXIT_OK = 0
EXIT_BAD_INPUT = 2
