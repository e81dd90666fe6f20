"""Reading a trial's `events.jsonl` while the trainer is still writing it (the run protocol, trainer/protocol.py).

The trainer appends one JSON object per line and flushes each line, so a reader polling the file sees
whole lines plus, at most, one line still being written: that partial line is kept until its newline
arrives. `LineTail` does the same for plain text logs. `RunState` folds the events into what the sweep
needs from one run.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.protocol import ERROR, EXPORT, FINAL, OK, VAL


class LineTail:
    """Incremental reader of the whole lines of a growing text file that may not exist yet."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def read_lines(self) -> list[bytes]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        return lines

    def read(self) -> list[str]:
        return [line.decode("utf-8", "replace") for line in self.read_lines()]


class EventTail(LineTail):
    """The new events of an `events.jsonl` file."""

    def read(self) -> list[dict[str, Any]]:
        events = []
        for line in self.read_lines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write carries nothing usable
            if isinstance(record, dict) and "event" in record:
                events.append(record)
        return events


@dataclass
class RunState:
    """What a run has told so far: its validations, its export and its final event."""

    vals: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    error: str | None = None

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == VAL:
            self.vals.append(event)
        elif kind == FINAL:
            self.final = event
        elif kind == EXPORT:
            self.export = event
        elif kind == ERROR:
            self.error = str(event.get("message", ""))

    @property
    def status(self) -> str | None:
        return None if self.final is None else str(self.final.get("status", OK))

    @property
    def evaluations(self) -> dict[str, dict[str, Any]]:
        """Every evaluation the run made after training, by label, in order: the export event's `evals`
        (a program's log lines, sweep.runlog.logparse.LiveLog), or for an export event without them (the
        built-in trainer's, which evaluates once) its score under `score_label`."""
        export = self.export or {}
        if isinstance(export.get("evals"), dict):
            return export["evals"]
        if "score_label" in export:
            return {export["score_label"]: {k: export.get(f"roundtrip_{k}") for k in ("val_loss", "val_bpb")}}
        return {}
