"""The run directory protocol: events.jsonl (machine-readable) and train.log (human, reference line shapes).

Only rank 0 writes. Every event line is flushed as it is written so a reader tailing the file (the sweep)
sees each event as soon as it happens; the file is only ever appended to.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from trainer.protocol import EVENTS_FILE, LOG_FILE


def _jsonable(value: Any) -> Any:
    # JSON has no NaN/inf; a diverged loss must still produce a parseable line.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class RunLog:
    """Writes events and log lines for rank 0; on other ranks every call is a no-op."""

    def __init__(self, run_dir: str | Path | None, active: bool, echo: bool = True):
        self.active = active
        self.echo = echo and active
        self.run_dir = Path(run_dir) if run_dir else None
        self._events = self._log = None
        if active and self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._events = open(self.run_dir / EVENTS_FILE, "a", buffering=1)
            self._log = open(self.run_dir / LOG_FILE, "a", buffering=1)

    def event(self, name: str, **fields: Any) -> None:
        if not self.active:
            return
        record = {"event": name, "time": time.time(), **_jsonable(fields)}
        if self._events is not None:
            self._events.write(json.dumps(record) + "\n")
            self._events.flush()

    def line(self, text: str) -> None:
        if not self.active:
            return
        if self._log is not None:
            self._log.write(text + "\n")
        if self.echo:
            print(text, flush=True)

    def write_file(self, name: str, text: str) -> None:
        if self.active and self.run_dir is not None:
            (self.run_dir / name).write_text(text)

    def close(self) -> None:
        for f in (self._events, self._log):
            if f is not None:
                f.close()
        self._events = self._log = None


def train_line(step: int, total: int, train_loss: float, train_time_ms: float, step_avg_ms: float) -> str:
    return (f"step:{step}/{total} train_loss:{train_loss:.4f} train_time:{train_time_ms:.0f}ms "
            f"step_avg:{step_avg_ms:.2f}ms")


def val_line(step: int, total: int, val_loss: float, val_bpb: float | None, train_time_ms: float,
             step_avg_ms: float) -> str:
    bpb = f" val_bpb:{val_bpb:.4f}" if val_bpb is not None else ""
    return (f"step:{step}/{total} val_loss:{val_loss:.4f}{bpb} train_time:{train_time_ms:.0f}ms "
            f"step_avg:{step_avg_ms:.2f}ms")


def fp8_line(step: int, total: int, scales: tuple[float, float, float], figures: dict[str, dict[str, float]]) -> str:
    """The `fp8` event as a train.log line: the scales, then per tensor saturated/flushed/amax/p99.9
    (fractions of the format max for the last two)."""
    x_s, w_s, grad_s = scales
    parts = [f"fp8 step:{step}/{total} x_s:{x_s:.6g} w_s:{w_s:.6g} grad_s:{grad_s:.6g}"]
    for kind, f in figures.items():
        parts.append(f"{kind}:sat={f['saturated']:.4g},flush={f['flushed']:.4g},amax={f['amax_ratio']:.4g},"
                     f"p999={f['p999_ratio']:.4g}")
    return " ".join(parts)


def stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
