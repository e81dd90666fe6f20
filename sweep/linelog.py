"""Events from the reference log lines of a running command (DESIGN 3.4), for `--trainer-cmd` programs
that print modded-nanogpt or parameter-golf style logs instead of writing `events.jsonl`.

Only the line shapes below are read; everything else (source code dumps, nvidia-smi output) is skipped:

    step:{s}/{N} val_loss:{x} [val_bpb:{y}] train_time:{t}ms step_avg:{a}ms   -> a `val` event
    step:{s}/{N} [train_loss:{x}] train_time:{t}ms step_avg:{a}ms             -> a `train` event
    stopping_early: wallclock_cap ...                                          -> final status wallclock_cap
    Serialized model {scheme}: {n} bytes                                       -> export artifact_bytes
    final_{scheme}_roundtrip[_exact] val_loss:{x} val_bpb:{y}                  -> export roundtrip values

A step line's fields are `name:value` pairs, the value a number (or nan/inf) with an optional `ms`, so
field order and extra fields do not matter. The `final` event is made when the command exits cleanly:
the last validation, with status `diverged` when its loss is not finite.
"""
from __future__ import annotations

import math
import re
import time
from typing import Any

STEP = re.compile(r"^step:(\d+)/(\d+)\s+(.*)$")
FIELD = re.compile(r"(\w+):(-?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf))(?:ms)?(?=\s|$)")
STOPPED = re.compile(r"^stopping_early:\s*(\w+)")
SERIALIZED = re.compile(r"^Serialized model\s+(\S+):\s*(\d+)\s*bytes")
ROUNDTRIP = re.compile(r"^final_(\w+?)_roundtrip\w*\s+val_loss:(\S+)\s+val_bpb:(\S+)")


def _num(text: str) -> float:
    return float(text)


class LineLog:
    """Turns reference log lines into protocol events; feed it lines in order."""

    def __init__(self):
        self.last_val: dict[str, Any] | None = None
        self.total_steps: int | None = None
        self.stop_reason: str | None = None
        self.export: dict[str, Any] = {}

    def feed(self, line: str) -> list[dict[str, Any]]:
        line = line.strip()
        now = time.time()
        m = STEP.match(line)
        if m:
            step, total = int(m.group(1)), int(m.group(2))
            self.total_steps = total
            fields = {k: _num(v) for k, v in FIELD.findall(m.group(3))}
            event = {"time": now, "step": step, "total_steps": total}
            if "train_time" in fields:
                event["train_time_ms"] = fields.pop("train_time")
            if "step_avg" in fields:
                event["step_avg_ms"] = fields.pop("step_avg")
            event.update(fields)
            event["event"] = "val" if "val_loss" in fields else "train"
            if event["event"] == "val":
                self.last_val = event
            return [event]
        m = STOPPED.match(line)
        if m:
            self.stop_reason = m.group(1)
            return []
        m = SERIALIZED.match(line)
        if m:
            self.export["artifact_bytes"] = int(m.group(2))
            return []
        m = ROUNDTRIP.match(line)
        if m:
            try:
                self.export.update(roundtrip_val_loss=_num(m.group(2)), roundtrip_val_bpb=_num(m.group(3)))
            except ValueError:
                return []
            return [{"event": "export", "time": now, **self.export}]
        return []

    def finish(self) -> dict[str, Any] | None:
        """The `final` event of a cleanly finished run, or None if it printed no validation."""
        if self.last_val is None:
            return None
        final = {k: v for k, v in self.last_val.items() if k != "event"}
        loss = final.get("val_loss")
        status = "diverged" if not math.isfinite(loss) else (self.stop_reason or "ok")
        return {**final, "event": "final", "time": time.time(), "status": status}
