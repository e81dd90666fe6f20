"""One distributed job (training, or exporting a finished run) and the exit code it ends with.

Shared by `python -m trainer` and `python -m trainer export`: both set up the process group, write
through a RunLog on rank 0, and must tear everything down on every path so that a bad input or a crash
on one rank never leaves the others waiting in a collective.
"""
from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path

from trainer import distributed, events
from trainer.config import ConfigError
from trainer.data import DataError
from trainer.protocol import EXIT_BAD_INPUT, EXIT_OK

EXIT_CRASH = 1

BAD_INPUT = (ConfigError, DataError, distributed.DeviceError)


def run_job(device: str, run_dir: str | Path, work: Callable[[distributed.Dist, events.RunLog], object],
            bad_input: tuple[type[Exception], ...] = ()) -> tuple[int, str]:
    """Run `work(dist, log)`; return (exit code, message). Errors of the `BAD_INPUT` types and of
    `bad_input` are the caller's input (exit 2, one-line message); anything else is a crash (exit 1,
    traceback).

    What `work` returns (its trainer, whose optimizers hold their finished collectives) is released only
    after the process group is torn down: if a gloo thread dropped the last reference to a collective
    while the interpreter shuts down, freeing it would need the GIL and the process would abort."""
    log = None
    kept = None
    try:
        d = distributed.setup(device)
        log = events.RunLog(run_dir, active=d.is_main)
        kept = work(d, log)
        # Ranks leave together: gloo may otherwise still be finishing a collective while one exits.
        distributed.barrier()
        return EXIT_OK, ""
    except (*BAD_INPUT, *bad_input) as e:
        return EXIT_BAD_INPUT, f"{type(e).__name__}: {e}"
    except Exception:
        return EXIT_CRASH, traceback.format_exc()
    finally:
        if log is not None:
            log.close()
        distributed.teardown()
        del kept
