"""The live view of a running sweep, instead of Ray's tables: a summary line whenever the picture changes,
and each running trial's step, losses, step time and time left (sweep.report.live_text says the words).

On a terminal the running trials are a table that `rich` redraws in place under the summary lines; any
other output (CI, `ray job logs`, a pipe) gets the summary and one line per running trial, every
`SWEEP_PROGRESS_EVERY` seconds and whenever a trial starts or ends. The trials' numbers come from the
progress board (sweep.trial.progress).
"""
from __future__ import annotations

import sys
import time

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sweep.report.live_text import display_settings, left_text, stamp, sweep_left, trial_cells, trial_left, trial_line
from sweep.stores.child_run import OUTPUT_LOG
from sweep.stores.tracking import TAG_ERROR, trial_label
from sweep.trial.progress import BoardReader
from sweep.trial.runner import FINAL_KEY, OBJECTIVE_KEY, TRIAL_NUMBER_KEY

REDRAW_EVERY_S = 0.5
COLUMNS = ("step", "train_loss", "val_loss", "step_avg", "left")


def trial_state(status: str, last_result: dict) -> str:
    """running | pending | done | pruned | failed, from a Tune trial's status and last result."""
    if status == "ERROR":
        return "failed"
    if status == "TERMINATED":
        return "done" if last_result.get(FINAL_KEY) else "pruned"
    return "running" if status == "RUNNING" else "pending"


def best_of(results: list[dict], mode: str) -> dict | None:
    finished = [r for r in results if r.get(FINAL_KEY) and r.get(OBJECTIVE_KEY) is not None]
    if not finished:
        return None
    pick = min if mode == "min" else max
    return pick(finished, key=lambda r: r[OBJECTIVE_KEY])


def running_table(rows: list[tuple[str, dict | None]]) -> Table:
    table = Table("trial", box=None, pad_edge=False)
    for name in COLUMNS:
        table.add_column(name, justify="right")
    for label, news in rows:
        cells = dict(trial_cells(news))
        table.add_row(label, *(cells.get(c, "starting" if c == "step" else "") for c in COLUMNS))
    return table


class LiveView(Callback):
    """Tune's callback; `sweep` names the progress board its trials send to, `slots` is how many trials
    run at once. Tune saves this object with the experiment and a resumed sweep runs the saved copy, so
    all it holds while it runs (clocks, board, display) is made in `setup`, which every driver calls."""

    # A copy saved by a sweep started before the view had a board lacks both: resumed, it shows the summary
    # line without per-trial numbers (no board to name) and assumes one trial at a time.
    sweep = ""
    slots = 1

    def __init__(self, metric: str, mode: str, total: int, sweep: str, slots: int):
        self.metric = metric
        self.mode = mode
        self.total = total
        self.sweep = sweep
        self.slots = slots

    def setup(self, **info) -> None:
        self._start = time.monotonic()
        self._last = ""
        self._started: dict[str, float] = {}    # trial id -> when this driver first saw it running
        self._durations: dict[str, float] = {}  # trial id -> how long it ran, once done or pruned
        self._display, self._every = display_settings()
        self._block_at = self._start
        self._numbered: set[str] = set()      # plain: the trials whose numbers have been shown
        self._printed: dict[str, str] = {}    # plain: each trial's line as last shown
        self._drawn_at = float("-inf")
        self._live: Live | None = None
        self._board = BoardReader(self.sweep) if self.sweep else None

    def counts(self, trials) -> dict[str, int]:
        counts = dict.fromkeys(("running", "done", "pruned", "failed", "pending"), 0)
        for t in trials:
            counts[trial_state(t.status, t.last_result or {})] += 1
        counts["pending"] += max(0, self.total - len(trials))
        return counts

    def line(self, trials, counts: dict[str, int]) -> str:
        text = f"{self.total} trials: " + ", ".join(f"{n} {k}" for k, n in counts.items())
        best = best_of([t.last_result or {} for t in trials], self.mode)
        if best is not None:
            text += f" | best {self.metric} {best[OBJECTIVE_KEY]:.6g} ({trial_label(best.get(TRIAL_NUMBER_KEY))})"
        return text

    def _track(self, trials, now: float) -> list:
        """The running trials, after noting when each trial started and how long each ended one ran."""
        running = []
        for t in trials:
            state = trial_state(t.status, t.last_result or {})
            if state == "running":
                self._started.setdefault(t.trial_id, now)
                running.append(t)
            elif state in ("done", "pruned") and t.trial_id in self._started:
                self._durations.setdefault(t.trial_id, now - self._started[t.trial_id])
        return running

    def on_step_end(self, iteration: int, trials, **info) -> None:
        now = time.monotonic()
        running = self._track(trials, now)
        news = self._board.latest() if self._board is not None else {}
        rows = [(trial_label(t.config.get(TRIAL_NUMBER_KEY)), news.get(t.trial_id)) for t in running]
        counts = self.counts(trials)
        text = self.line(trials, counts)
        if counts["running"] or counts["pending"]:
            left = sweep_left(list(self._durations.values()),
                              [(now - self._started[t.trial_id], trial_left(news.get(t.trial_id))) for t in running],
                              counts["pending"], self.slots)
            status = f"{text} | {left_text(left)}"
        else:
            status = text
        head = f"{stamp(now - self._start)} {status}"
        changed = text != self._last
        self._last = text
        if self._display == "plain":
            self._plain(now, head, rows, changed)
        else:
            self._redraw(now, head, rows, changed)

    def _redraw(self, now: float, head: str, rows: list[tuple[str, dict | None]], changed: bool) -> None:
        if self._live is None:
            self._live = Live(console=Console(), auto_refresh=False, transient=True)
            self._live.start()
        if changed or now - self._drawn_at >= REDRAW_EVERY_S:
            self._drawn_at = now
            self._live.update(Group(running_table(rows), Text(head)) if rows else Text(head), refresh=not changed)
        if changed:
            # Printed above the table, which is drawn again below it (already with the new picture).
            self._live.console.print(head, markup=False, highlight=False, soft_wrap=True)

    def _plain(self, now: float, head: str, rows: list[tuple[str, dict | None]], changed: bool) -> None:
        """Every `every` seconds the summary and all running trials; in between, when the summary changes
        or a trial tells its first numbers, the summary and the trials whose line is new."""
        lines = {label: trial_line(label, news) for label, news in rows}
        first_numbers = {label for label, news in rows if trial_cells(news)} - self._numbered
        full = now - self._block_at >= self._every
        if not (full or changed or first_numbers):
            return
        self._numbered |= first_numbers
        if full:
            self._block_at = now
        shown = [text for label, text in lines.items() if full or self._printed.get(label) != text]
        self._printed.update(lines)
        print("\n".join([head, *(f"{stamp(now - self._start)}   {text}" for text in shown)]), file=sys.stdout,
              flush=True)

    def on_trial_recover(self, iteration: int, trials, trial, **info) -> None:
        self._failed(trial, "Tune runs it again (--max-failures)")

    def on_trial_error(self, iteration: int, trials, trial, **info) -> None:
        self._failed(trial, "it has used its --max-failures retries")

    def _failed(self, trial, then: str) -> None:
        """One line in place of Tune's logged traceback: why the trial failed is in its child run."""
        label = trial_label(trial.config.get(TRIAL_NUMBER_KEY))
        text = (f"{stamp(time.monotonic() - self._start)}   {label}  failed; {then}; why: its child run's "
                f"{TAG_ERROR} tag, or trials/{label}/{OUTPUT_LOG} in the sweep's folder")
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=sys.stdout, flush=True)

    def on_experiment_end(self, trials, **info) -> None:
        """Also when the sweep was interrupted or Tune's loop raised: the table goes before the summary."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self._board is not None:
            self._board.close()
