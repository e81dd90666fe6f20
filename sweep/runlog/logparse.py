"""Parse training logs: modded-nanogpt record logs, parameter-golf logs, and our own train.log.

Both upstream projects changed their log shapes over time, so parsing is by line shape, not by version:

- step lines: `step:{s}/{N} train_loss:{x} train_time:{ms}ms step_avg:{ms}ms` and the val form with
  `val_loss` (and `val_bpb` in parameter-golf); modded-nanogpt dropped `train_loss` in 2025, the oldest
  logs print `step_avg:nanms` before timing starts, and parameter-golf's 2026 scripts print
  `{s}/{N} train_loss: {x} train_time: {min}m tok/s: {n}` and `{s}/{N} val_loss: {x} val_bpb: {y}`;
- evaluation lines after training: `<label> val_loss:{x} val_bpb:{y} [eval_time:{ms}ms]` for labels such
  as `final_int8_zlib_roundtrip`, `final_int6_sliding_window stride:64`, `DIAGNOSTIC post_ema`,
  `quantized_ttt`, each optionally repeated with an `_exact` suffix at full precision;
- size lines `Serialized model <scheme>: N bytes`, `Code size: N bytes`, `Total submission size <scheme>: ...`;
- `stopping_early: wallclock_cap ...`, `peak memory allocated: N MiB ...`, and config facts printed as
  `key:value key:value` lines or as `  key: value` lines under a `Hyperparameters:` header.

Log files may start with the full training script and `nvidia-smi` output; every pattern is anchored at
the start of a line and needs literal numbers, so the f-strings in that source never match.

The number a parameter-golf record is scored by (`roundtrip_val_loss` / `roundtrip_val_bpb` here, the
golf objective of a sweep; `score_label` names the evaluation it came from) is the last evaluation after
training of the model as submitted, its `_exact` line when it has one: the quantized round trip
(`final_int8_zlib_roundtrip`, `final_int6_roundtrip`, `quantized`) and after it any sliding-window or
test-time-training evaluation (`final_int6_sliding_window`, `quantized_sliding_window`, `legal_ttt`,
`quantized_ttt_phased`, ...), whichever the script printed last. Never a diagnostic: labels that start
with `diagnostic` (`DIAGNOSTIC post_ema`, `diagnostic quantized`) or `pre-quantization` (the unquantized
model). A line that repeats the score's exact numbers under another label (records since 2026-03-22
reprint it as `final_int8_zlib_roundtrip_exact` for the baseline's tooling) is no new evaluation: the
score keeps its label. docs/golf_score.md has the rule checked against every upstream record.

`LogFold` classifies each line and folds it, one at a time, into a `ParsedLog`.
`parse_log` folds a whole file (for `sweep import-logs`), `LiveLog` the output of a running command (for
a trial), so both read every shape the same way.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from trainer.protocol import DIVERGED, EXPORT, FINAL, OK, TRAIN, UNTIE, VAL, WALLCLOCK_CAP

MODDED_NANOGPT = "modded-nanogpt"
PARAMETER_GOLF = "parameter-golf"
GPT_SWEEP = "gpt-sweep"


class NotATrainingLog(ValueError):
    """The text has no step lines of any known shape."""


class TrainPoint(NamedTuple):
    step: int
    total_steps: int
    train_loss: float | None
    train_time_ms: float | None
    step_avg_ms: float | None


class ValPoint(NamedTuple):
    step: int
    val_loss: float
    val_bpb: float | None
    train_time_ms: float | None
    step_avg_ms: float | None


class EvalResult(NamedTuple):
    val_loss: float | None
    val_bpb: float | None


@dataclass
class ParsedLog:
    source: str
    train: list[TrainPoint] = field(default_factory=list)
    val: list[ValPoint] = field(default_factory=list)
    total_steps: int | None = None
    last_step: int | None = None
    final_val_loss: float | None = None
    final_val_bpb: float | None = None
    wallclock_s: float | None = None
    artifact_bytes: int | None = None
    code_bytes: int | None = None
    total_bytes: int | None = None
    roundtrip_val_loss: float | None = None
    roundtrip_val_bpb: float | None = None
    score_label: str | None = None       # the evaluation roundtrip_val_* came from (see the module docstring)
    # Every post-training evaluation by label (`_exact` folded into its label), in log order.
    evals: dict[str, EvalResult] = field(default_factory=dict)
    peak_mem_mib: float | None = None
    untie_step: int | None = None
    stopped_early: bool = False
    diverged: bool = False
    complete: bool = False
    hyperparameters: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.diverged:
            return DIVERGED
        if not self.complete:
            return "incomplete"
        return WALLCLOCK_CAP if self.stopped_early else OK


# --- line level -----------------------------------------------------------------------------------------

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"
# Prefixes that launchers put in front of a program's lines: torchrun --tee, unix or ISO timestamps, Ray
# workers. At most one space after each is removed, so indentation behind a prefix survives.
_PREFIX = re.compile(
    r"^(?:\[(?:default|rank)?\d+\]: ?"
    r"|\d{10}\.\d+ "
    r"|\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\]?(?: ?[|-])? "
    r"|\(\w+ pid=\d+(?:, ip=[\d.]+)?\) ?)+")
_STEP = re.compile(r"^(?:step[:\s]\s*)?(\d+)/(\d+)\s+(.*)$")
_FIELD = re.compile(r"(?:^|(?<=\s))([A-Za-z_][\w/]*)\s*[:=]\s*([^\s,|]+)")
_SIZE = re.compile(r"^(Serialized model|Code size|Total submission size)(?: ([^:]+?))?:\s*(\d+) bytes")
_PEAK = re.compile(r"^peak memory (?:allocated|consumption):\s*(\d+(?:\.\d+)?) MiB")
_STOP = re.compile(r"^stopping_early:\s*(\w+)(.*)$")
_DIVERGED = re.compile(r"^diverged:.*?step:\s*(\d+)/(\d+)")
_UNTIE = re.compile(r"^untie step:\s*(\d+)/(\d+)")
_OUR_HEADER = re.compile(r"^world_size:\d+ device:\S+ torch:\S+")
_FACTS = re.compile(r"^[A-Za-z_]\w*:\S+(?:\s+[A-Za-z_]\w*:\S+)*\s*$")
_RUNNING = re.compile(r"^Running (Python|PyTorch|pytorch|Triton version) (\S+)")
# `val_loss:x`, `val_loss: x` or `val_loss=x`, never `val_loss = x` (an assignment in logged source code).
_EVAL_KEY = re.compile(r"\sval_(?:loss|bpb)(?::\s*|=)(?=[-+.\dni])")
_TIME_UNITS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0, "min": 60_000.0, "h": 3_600_000.0}
_NOT_FACTS = ("step", "warmup_step")


def _strip_prefix(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n"), count=1)


def _number(text: str) -> float | None:
    m = re.match(rf"^(?:{_NUM})", text, re.I)
    return float(m.group(0)) if m else None


def _duration_ms(text: str) -> float | None:
    m = re.match(rf"^({_NUM})\s*(ms|min|s|m|h)?$", text, re.I)
    if not m:
        return None
    value = float(m.group(1))
    if not math.isfinite(value):
        return None
    return value * _TIME_UNITS[(m.group(2) or "ms").lower()]


def _fields(text: str) -> dict[str, str]:
    return {k: v for k, v in _FIELD.findall(text)}


# Forks of both trainers abbreviate the step-line keys.
_STEP_ALIASES = {"loss": "train_loss", "t": "train_time", "time": "train_time"}


def _step_event(step: int, total: int, rest: str) -> dict | None:
    f = _fields(rest)
    for alias, key in _STEP_ALIASES.items():
        if alias in f and key not in f:
            f[key] = f.pop(alias)
    has_val = "val_loss" in f
    if not (has_val or "train_loss" in f or "train_time" in f):
        return None
    train_time = _duration_ms(f["train_time"]) if "train_time" in f else None
    step_avg = _duration_ms(f["step_avg"]) if "step_avg" in f else None
    if has_val:
        val_loss = _number(f["val_loss"])
        if val_loss is None:
            return None
        return {"event": VAL, "step": step, "total_steps": total, "val_loss": val_loss,
                "val_bpb": _number(f["val_bpb"]) if "val_bpb" in f else None,
                "train_time_ms": train_time, "step_avg_ms": step_avg}
    return {"event": TRAIN, "step": step, "total_steps": total,
            "train_loss": _number(f["train_loss"]) if "train_loss" in f else None,
            "train_time_ms": train_time, "step_avg_ms": step_avg}


def _eval_label(head: str) -> tuple[str, bool]:
    """(label, exact) from the words before `val_loss`: `final_int6_sliding_window_exact stride:64` gives
    ("final_int6_sliding_window", True), `final_int8_zlib_roundtrip_exact sliding` gives
    ("final_int8_zlib_roundtrip_sliding", True); `DIAGNOSTIC post_ema` gives ("diagnostic_post_ema", False)."""
    words = head.split()
    plain = [w for w in words if ":" not in w and "=" not in w] or words[:1]
    exact = any(w.lower().endswith("_exact") for w in plain)
    label = "_".join(w[: -len("_exact")] if w.lower().endswith("_exact") else w for w in plain).lower()
    return label or "eval", exact


def _classify(text: str) -> dict[str, Any] | None:
    if not text or text[0].isspace():
        return None
    m = _STEP.match(text)
    if m:
        return _step_event(int(m.group(1)), int(m.group(2)), m.group(3))
    m = _SIZE.match(text)
    if m:
        kind = {"Serialized model": "model", "Code size": "code", "Total submission size": "total"}[m.group(1)]
        return {"event": "size", "kind": kind, "scheme": m.group(2), "bytes": int(m.group(3))}
    m = _STOP.match(text)
    if m:
        f = _fields(m.group(2))
        step_total = re.match(r"^(\d+)/(\d+)$", f.get("step", ""))
        return {"event": "stop", "reason": m.group(1),
                "step": int(step_total.group(1)) if step_total else None,
                "total_steps": int(step_total.group(2)) if step_total else None,
                "train_time_ms": _duration_ms(f["train_time"]) if "train_time" in f else None}
    m = _DIVERGED.match(text)
    if m:
        return {"event": "stop", "reason": DIVERGED, "step": int(m.group(1)), "total_steps": int(m.group(2)),
                "train_time_ms": None}
    m = _UNTIE.match(text)
    if m:
        return {"event": UNTIE, "step": int(m.group(1)), "total_steps": int(m.group(2))}
    m = _PEAK.match(text)
    if m:
        return {"event": "peak_mem", "peak_mem_mib": float(m.group(1))}
    if _EVAL_KEY.search(text):
        f = _fields(text)
        loss = _number(f["val_loss"]) if "val_loss" in f else None
        bpb = _number(f["val_bpb"]) if "val_bpb" in f else None
        if loss is None and bpb is None:
            return None
        eval_time = f.get("eval_time") or f.get("t")
        label, exact = _eval_label(text[:_EVAL_KEY.search(text).start()])
        return {"event": "eval", "label": label, "val_loss": loss, "val_bpb": bpb,
                "eval_time_ms": _duration_ms(eval_time) if eval_time else None, "exact": exact}
    m = _RUNNING.match(text)
    if m:
        return {"event": "running", "name": m.group(1).split()[0].lower(), "version": m.group(2)}
    if _FACTS.match(text):
        facts = _fields(text)
        if facts and not any(k in facts for k in _NOT_FACTS):
            return {"event": "header" if _OUR_HEADER.match(text) else "facts", "facts": facts}
    return None


# --- whole log ---------------------------------------------------------------------------------------

_HPARAM_HEADER = re.compile(r"^Hyperparameters:\s*$")
_HPARAM_LINE = re.compile(r"^\s+([A-Za-z_]\w*):\s*(.*?)\s*$")
# Evaluations that are not of the submitted model: diagnostics, and the unquantized model before export.
_DIAGNOSTIC = re.compile(r"^(?:diagnostic|pre[-_]?quant)")


def is_diagnostic(label: str) -> bool:
    """Whether the evaluation `label` (as LogFold names it) is a diagnostic, never a record's score."""
    return bool(_DIAGNOSTIC.match(label))


class LogFold:
    """What the lines of one log have said so far; feed it lines in order, then read `parsed()`."""

    def __init__(self) -> None:
        self._reset()
        self.hyperparameters: dict[str, str] = {}
        self.ours = False
        self.golf_marks = 0
        self._in_hparams = False

    def _reset(self) -> None:
        self.train: list[TrainPoint] = []
        self.val: list[ValPoint] = []
        self.total: int | None = None
        self.last_step: int | None = None
        self.sizes: list[tuple[str, str | None, int]] = []
        self.evals: dict[str, EvalResult] = {}
        self.exact_labels: set[str] = set()
        self.score: tuple[str, EvalResult] | None = None   # (label, result): the record's score so far
        self.stop: dict | None = None
        self.untie_step: int | None = None
        self.peak: float | None = None

    def feed(self, raw: str) -> dict[str, Any] | None:
        """Fold one line; returns what it says, None for lines that carry nothing (and hyperparameter lines).

        Launcher prefixes (`[default0]:`, timestamps, `(pid=...)`) are ignored. The dict's `event` is one of:
          `train` {step, total_steps, train_loss, train_time_ms, step_avg_ms} and
          `val` {step, total_steps, val_loss, val_bpb, train_time_ms, step_avg_ms} (the events.jsonl fields;
            values a line does not print are None),
          `eval` {label, val_loss, val_bpb, eval_time_ms, exact} a post-training evaluation,
          `size` {kind: model | code | total, scheme (None for the raw model), bytes},
          `stop` {reason: wallclock_cap | diverged | ..., step, total_steps, train_time_ms},
          `untie` {step, total_steps}, `peak_mem` {peak_mem_mib}, `header` {facts} (our trainer's first line),
          `facts` {facts} (a `key:value ...` line), `running` {name, version}.
        """
        line = _strip_prefix(raw)
        if self._in_hparams:
            m = _HPARAM_LINE.match(line)
            if m:
                self.hyperparameters[m.group(1)] = m.group(2)
                return None
            self._in_hparams = False
        if _HPARAM_HEADER.match(line):
            self._in_hparams = True
            return None
        ev = _classify(line)
        if ev is not None:
            self._fold(ev)
        return ev

    def _point(self, ev: dict) -> None:
        step = ev["step"]
        if self.last_step is not None and step < self.last_step:
            # A new run started in the same file (a rerun appended to a tee'd log): report the last one.
            self._reset()
        self.last_step = step
        self.total = ev["total_steps"]
        if ev["event"] == VAL:
            self.val.append(ValPoint(step, ev["val_loss"], ev["val_bpb"], ev["train_time_ms"], ev["step_avg_ms"]))
            if ev["val_bpb"] is not None:
                self.golf_marks += 1
        else:
            self.train.append(TrainPoint(step, ev["total_steps"], ev["train_loss"], ev["train_time_ms"],
                                         ev["step_avg_ms"]))

    def _eval(self, ev: dict) -> None:
        label = ev["label"]
        if label in self.exact_labels and not ev["exact"]:
            return  # a 4-decimal line never replaces the full-precision one
        if ev["exact"]:
            self.exact_labels.add(label)
        result = EvalResult(ev["val_loss"], ev["val_bpb"])
        self.evals[label] = result
        if is_diagnostic(label):
            return
        if self.score is not None and self.score[0] != label and self.score[1] == result:
            return  # the score reprinted under another label
        self.score = (label, result)

    def _fold(self, ev: dict) -> None:
        kind = ev["event"]
        if kind in (TRAIN, VAL):
            self._point(ev)
            return
        if kind in ("size", "eval") or (kind == "stop" and ev["reason"] != DIVERGED):
            self.golf_marks += 1  # lines only parameter-golf (and our trainer, told apart by its header) print
        if kind == "size":
            self.sizes.append((ev["kind"], ev["scheme"], ev["bytes"]))
        elif kind == "eval":
            self._eval(ev)
        elif kind == "stop":
            self.stop = ev
        elif kind == "peak_mem":
            self.peak = ev["peak_mem_mib"]
        elif kind == UNTIE:
            self.untie_step = ev["step"]
        elif kind == "header":
            self.ours = True
            self.hyperparameters.update(ev["facts"])
        elif kind == "facts":
            self.hyperparameters.update(ev["facts"])
        elif kind == "running":
            self.hyperparameters[f"{ev['name']}_version"] = ev["version"]

    def parsed(self) -> ParsedLog:
        """The log so far; raises NotATrainingLog if it has no step lines of a known shape."""
        if not self.train and not self.val:
            raise NotATrainingLog("no training step lines (step:S/N ... train_loss/val_loss/train_time) found")
        source = GPT_SWEEP if self.ours else PARAMETER_GOLF if self.golf_marks else MODDED_NANOGPT
        out = ParsedLog(source=source, train=list(self.train), val=list(self.val), total_steps=self.total,
                        last_step=self.last_step, evals=dict(self.evals), peak_mem_mib=self.peak,
                        untie_step=self.untie_step, hyperparameters=dict(self.hyperparameters))
        out.stopped_early = self.stop is not None and self.stop["reason"] != DIVERGED
        out.diverged = self.stop is not None and self.stop["reason"] == DIVERGED
        out.artifact_bytes, out.code_bytes, out.total_bytes = _sizes(self.sizes)
        if self.score is not None:
            out.score_label, (out.roundtrip_val_loss, out.roundtrip_val_bpb) = self.score
        ended, closing = _training_end(self)
        if closing is not None:
            out.final_val_loss, out.final_val_bpb = closing.val_loss, closing.val_bpb
            wall_ms = closing.train_time_ms
            if wall_ms is None and self.stop is not None:
                wall_ms = self.stop["train_time_ms"]
            out.wallclock_s = wall_ms / 1000.0 if wall_ms is not None else None
        out.complete = ended and _summary_present(source, self)
        return out


def _sizes(sizes: list[tuple[str, str | None, int]]) -> tuple[int | None, int | None, int | None]:
    """(artifact, code, total) bytes. The artifact is the last compressed model (`Serialized model
    <scheme>: N bytes`); the raw `Serialized model: N bytes` checkpoint printed before it is not one. The
    total is the last `Total submission size` printed for that artifact: with a scheme, or after it."""
    artifact_at = max((i for i, (kind, scheme, _) in enumerate(sizes) if kind == "model" and scheme), default=None)
    if artifact_at is None:
        return None, None, None
    code = [n for kind, _, n in sizes if kind == "code"]
    totals = [n for i, (kind, scheme, n) in enumerate(sizes) if kind == "total" and (scheme or i > artifact_at)]
    return sizes[artifact_at][2], (code[-1] if code else None), (totals[-1] if totals else None)


def _training_end(fold: LogFold) -> tuple[bool, ValPoint | None]:
    """(whether training finished, the val point that closed it); a diverged run ends without one."""
    if fold.stop is not None and fold.stop["reason"] == DIVERGED:
        return True, None
    if not fold.val:
        return False, None
    last = fold.val[-1]
    if last.step == fold.total:
        return True, last
    if fold.stop is not None and (fold.stop["step"] is None or last.step >= fold.stop["step"]):
        return True, last
    return False, None


def _summary_present(source: str, fold: LogFold) -> bool:
    # What each writer prints after training: modded-nanogpt nothing required (its oldest logs end on the
    # last val line), parameter-golf the export and its round-trip evaluation, our trainer the peak memory
    # line and, when it exported, the round trip too.
    exported = any(kind == "model" and scheme for kind, scheme, _ in fold.sizes)
    if source == PARAMETER_GOLF:
        return bool(fold.evals)
    if source == GPT_SWEEP:
        return fold.peak is not None and (fold.score is not None or not exported)
    return True


def parse_log(text: str) -> ParsedLog:
    """Parse a whole training log; raises NotATrainingLog if it has no step lines of a known shape."""
    fold = LogFold()
    for raw in text.splitlines():
        fold.feed(raw)
    return fold.parsed()


# --- a running command's output -------------------------------------------------------------------------

_EXPORT_FIELDS = ("artifact_bytes", "code_bytes", "total_bytes", "roundtrip_val_loss", "roundtrip_val_bpb",
                  "score_label")


def _present(event: dict[str, Any]) -> dict[str, Any]:
    """The protocol event without the fields its line did not print."""
    return {k: v for k, v in event.items() if v is not None}


class LiveLog:
    """Protocol events (`train`, `val`, then `export` and `final`) from the lines of a running command, for
    programs that print reference log lines instead of writing `events.jsonl`.

    `train` and `val` events come as their lines arrive. When the command has exited cleanly, `finish`
    folds the whole output as `parse_log` would: an `export` event with the artifact sizes, the score
    (see the module docstring), the label it came from (`score_label`) and every evaluation printed after
    training (`evals`: label -> {val_loss, val_bpb}); then the `final` event, which is the last
    validation, with status `diverged` when its loss is not finite (or the log says so), `wallclock_cap`
    when training stopped early, else `ok`.
    """

    def __init__(self) -> None:
        self.fold = LogFold()

    def feed(self, line: str) -> list[dict[str, Any]]:
        ev = self.fold.feed(line)
        if ev is None or ev["event"] not in (TRAIN, VAL):
            return []
        return [{**_present(ev), "time": time.time()}]

    def finish(self) -> list[dict[str, Any]]:
        """The `export` and `final` events of a cleanly finished run; none if it printed no validation."""
        if not self.fold.val:
            return []
        log = self.fold.parsed()
        now = time.time()
        events = []
        export = _present({k: getattr(log, k) for k in _EXPORT_FIELDS})
        if log.evals:
            export["evals"] = {label: _present(result._asdict()) for label, result in log.evals.items()}
        if export:
            events.append({"event": EXPORT, "time": now, **export})
        last = log.val[-1]
        status = (DIVERGED if log.diverged or not math.isfinite(last.val_loss)
                  else WALLCLOCK_CAP if log.stopped_early else OK)
        final = _present({"step": last.step, "val_loss": last.val_loss, "val_bpb": last.val_bpb,
                          "train_time_ms": last.train_time_ms, "step_avg_ms": last.step_avg_ms,
                          "peak_mem_mib": log.peak_mem_mib})
        events.append({"event": FINAL, "time": now, **final, "status": status})
        return events
