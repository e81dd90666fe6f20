"""A two-rank training run whose rank 1 clock runs three times faster than rank 0's, started by
tests/test_clock.py under torchrun. Each rank writes the step at which it untied and how many steps it
trained to OUT/rank<r>.json; rank 0 also writes the run directory OUT/run."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from trainer import clock, distributed, events
from trainer.config import load_config
from trainer.job import run_job
from trainer.train import Trainer

out = Path(sys.argv[1])
rank = distributed.int_env("RANK")
if rank == 1:
    real = time.perf_counter
    clock.perf_counter = lambda: 3.0 * real()

cfg = load_config("tiny", overrides=["train.iterations=100000", "train.max_wallclock_seconds=4",
                                     "train.untie_frac=0.5", "train.val_every=0", "train.log_every=0",
                                     "train.val_tokens=4096", "train.val_batch_tokens=4096",
                                     "train.batch_tokens=1024", "train.micro_batches=2",
                                     "train.warmdown_iters=10", "train.save_model=false"],
                  world_size=distributed.world_size_from_env())
seen = {"steps": 0, "untie_at": None}


def work(d: distributed.Dist, log: events.RunLog) -> Trainer:
    trainer = Trainer(cfg, d, log)
    train_step, untie = trainer.train_step, trainer.untie

    def counted_step(*args):
        seen["steps"] += 1
        return train_step(*args)

    def recorded_untie():
        seen["untie_at"] = seen["steps"]
        untie()

    trainer.train_step, trainer.untie = counted_step, recorded_untie
    trainer.run()
    return trainer


code, message = run_job("cpu", out / "run", work)
(out / f"rank{rank}.json").write_text(json.dumps({**seen, "code": code, "message": message[-2000:]}))
sys.exit(code)
