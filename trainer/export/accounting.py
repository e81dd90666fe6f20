"""Submission size accounting: compressed model bytes + code bytes against the 16,000,000-byte limit.

Code bytes follow the parameter-golf rule (the bytes of the training code that produced the model). Here
the training code is the `trainer` package, so code bytes are the sum of the on-disk sizes of every `.py`
file under the package folder, subpackages included, skipping `__pycache__`; YAML presets, compiled files
and tests are not code. File sizes are used as stored (no newline or encoding normalisation), and the
sum does not depend on the order the folder is walked in.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trainer

TRAINER_ROOT = Path(trainer.__file__).resolve().parent
DEFAULT_MAX_BYTES = 16_000_000


def code_files(root: str | Path = TRAINER_ROOT) -> list[Path]:
    """The source files counted as code, sorted."""
    return sorted(p for p in Path(root).rglob("*.py") if "__pycache__" not in p.parts and p.is_file())


def code_bytes(root: str | Path = TRAINER_ROOT) -> int:
    return sum(p.stat().st_size for p in code_files(root))


@dataclass(frozen=True)
class SizeReport:
    artifact_bytes: int
    code_bytes: int
    max_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.artifact_bytes + self.code_bytes

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.max_bytes

    def fields(self) -> dict[str, int | bool]:
        return {"artifact_bytes": self.artifact_bytes, "code_bytes": self.code_bytes,
                "total_bytes": self.total_bytes, "max_bytes": self.max_bytes, "fits": self.fits}


def size_report(artifact_bytes: int, max_bytes: int = DEFAULT_MAX_BYTES, code: int | None = None) -> SizeReport:
    """Totals for an artifact of `artifact_bytes`; `code` defaults to this trainer's `code_bytes()`."""
    return SizeReport(artifact_bytes, code_bytes() if code is None else code, max_bytes)
