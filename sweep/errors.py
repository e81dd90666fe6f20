"""The one error type for bad input: the CLI turns it into exit code 2 before any work starts."""
from __future__ import annotations


class InputError(ValueError):
    """Bad input, named by where it is (a file, a file and a key, a flag) and what is wrong."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message
