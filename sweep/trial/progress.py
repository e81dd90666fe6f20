"""Each running trial's latest step, losses and step time, from the trial to the driver's live view.

The driver cannot read the trials' files (they run on other nodes), and Tune hears of a trial only at its
validations: one report per validation is what ASHA's rungs count, so the train events cannot go that way.
Instead the live view starts a small Ray actor, the board, named after the sweep (a resumed sweep's driver
starts its own), and each trial sends it the numbers of its latest `train` and `val` events (the events
that also feed MLflow), at most once a second and without waiting for an answer. A board that is slow or
gone costs a trial nothing but its progress line, and the driver a one-time warning.
"""
from __future__ import annotations

import sys
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from trainer.protocol import TRAIN, VAL

SEND_EVERY_S = 1.0
# News a trial has sent that a busy board has not taken yet; beyond it the trial drops news, not memory.
MAX_PENDING_CALLS = 8
TRAIN_FIELDS = ("step", "total_steps", "train_loss", "step_avg_ms")
VAL_FIELDS = ("step", "val_loss", "step_avg_ms")


def board_name(sweep: str) -> str:
    return f"sweep-progress:{sweep}"


@ray.remote(num_cpus=0)
class ProgressBoard:
    """The latest news of each trial, by Tune trial id."""

    def __init__(self) -> None:
        self._news: dict[str, dict[str, Any]] = {}

    def post(self, trial_id: str, news: dict[str, Any]) -> None:
        self._news[trial_id] = news

    def latest(self) -> dict[str, dict[str, Any]]:
        return self._news


def start_board(sweep: str):
    """The board of `sweep`, on the driver's node (the head of a cluster, which takes no trials: it asks
    for no CPU); the one already there when an earlier experiment of the same driver made it (the rounds of
    a sequential confirmation)."""
    node = ray.get_runtime_context().get_node_id()
    return ProgressBoard.options(
        name=board_name(sweep), get_if_exists=True, max_pending_calls=MAX_PENDING_CALLS,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=True)).remote()


def warn_once(state: dict, text: str) -> None:
    if not state.get("warned"):
        state["warned"] = True
        print(f"sweep: live progress: {text}", file=sys.stderr, flush=True)


class TrialProgress:
    """A trial's side: what its events say so far, sent to the board when it has changed, at most every
    `every_s` seconds. A retried trial starts again from nothing, so its first news resets the board's."""

    def __init__(self, sweep: str, trial_id: str, every_s: float = SEND_EVERY_S):
        self.trial_id = trial_id
        self.every_s = every_s
        self.news: dict[str, Any] = {}
        self._sent_at = float("-inf")
        self._changed = True
        self._warning: dict = {}
        try:
            self.board = ray.get_actor(board_name(sweep))
        except ValueError:
            self.board = None  # a trial started without a live view (a board of its own is not worth it)

    def apply(self, event: dict[str, Any]) -> None:
        fields = {TRAIN: TRAIN_FIELDS, VAL: VAL_FIELDS}.get(event.get("event"), ())
        for key in fields:
            if key in event:
                self.news[key] = event[key]
                self._changed = True

    def tick(self) -> None:
        now = time.monotonic()
        if self.board is None or not self._changed or now - self._sent_at < self.every_s:
            return
        self._sent_at, self._changed = now, False
        try:
            self.board.post.remote(self.trial_id, dict(self.news))
        except Exception as e:  # whatever the board's trouble, the trial goes on without it
            warn_once(self._warning, f"the progress board took no news ({type(e).__name__}: {e})")


class BoardReader:
    """The driver's side: the board's news, asked for at most every `every_s` seconds and never waited
    for (Tune's loop calls the live view between its own steps). A board that dies, or has not answered
    for `patience_s`, is warned about once; the live view then goes on without per-trial numbers."""

    def __init__(self, sweep: str, every_s: float = SEND_EVERY_S, patience_s: float = 30.0):
        self.every_s = every_s
        self.patience_s = patience_s
        self.news: dict[str, dict[str, Any]] = {}
        self._asked: ray.ObjectRef | None = None
        self._asked_at = float("-inf")
        self._warning: dict = {}
        self.board = start_board(sweep)

    def latest(self) -> dict[str, dict[str, Any]]:
        now = time.monotonic()
        if self._asked is not None:
            ready, _ = ray.wait([self._asked], timeout=0)
            if ready:
                self._asked = None
                try:
                    self.news = ray.get(ready[0])
                except ray.exceptions.RayError as e:
                    self.board = None
                    warn_once(self._warning, f"the progress board is gone ({type(e).__name__})")
            elif now - self._asked_at > self.patience_s:
                warn_once(self._warning, f"the progress board has not answered for {self.patience_s:.0f} s")
        if self.board is not None and self._asked is None and now - self._asked_at >= self.every_s:
            self._asked, self._asked_at = self.board.latest.remote(), now
        return self.news

    def close(self) -> None:
        if self.board is not None:
            ray.kill(self.board)
            self.board = None
