"""The one error type for bad input, which the CLI turns into exit code 2 before any work starts, and the
exit codes of the `sweep` commands (a trainer's own are in trainer/protocol.py).
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_INTERRUPTED = 1     # stopped by SIGINT or SIGTERM; `sweep resume` continues it
EXIT_STORE_FAILED = 1    # a store (MLflow, Optuna, the disk) stopped taking writes; `sweep resume` continues
EXIT_SEEDS_FAILED = 1    # `sweep verify`: some seed gave no loss (crashed, diverged, interrupted)
EXIT_BAD_INPUT = 2       # an InputError, found before anything runs


class InputError(ValueError):
    """Bad input, named by where it is (a file, a file and a key, a flag) and what is wrong."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message
