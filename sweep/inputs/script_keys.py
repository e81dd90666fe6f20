"""Nothing silent: an env-mode sweep sets only names its script reads.

A script that reads its hyperparameters from the environment ignores a variable it never asks for, so a
misspelt key would run every trial with the script's default while MLflow shows the swept values. Every
swept and fixed key must therefore occur as a string literal in the script's source, found by parsing it:
`os.environ.get("WARMDOWN_ITERS", ...)`, `os.getenv(...)` and `os.environ[...]` all count, a name that only
stands in a comment does not. `trainer.env` entries are not checked: they may be meant
for torch or NCCL. A script that builds its names at runtime needs `--no-check-keys`.
"""
from __future__ import annotations

import ast
import difflib
from pathlib import Path

from sweep.errors import InputError
from sweep.inputs.overrides import ENV_NAME

SKIP_FLAG = "--no-check-keys"


def string_literals(script: Path) -> set[str]:
    try:
        tree = ast.parse(script.read_bytes(), filename=str(script))
    except SyntaxError as e:
        raise InputError(str(script), f"cannot read which names it reads ({e.msg}, line {e.lineno}); "
                                      f"{SKIP_FLAG} skips this check") from None
    except OSError as e:
        raise InputError(str(script), f"cannot read it: {e.strerror or e}") from None
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def unread_key_message(key: str, script_name: str, literals: set[str]) -> str:
    message = f"{script_name} never reads it"
    close = difflib.get_close_matches(key, sorted(s for s in literals if ENV_NAME.match(s)), n=1)
    return f"{message}; did you mean {close[0]}?" if close else message


def check_script_keys(keys: dict[str, str], script: Path) -> None:
    """Raise one InputError naming every key that `script` never reads; `keys` maps each key to where
    it was set (`space.yaml: params.WARMDOWN_ITERS`, `--set SEED`)."""
    literals = string_literals(script)
    unread = [(where, unread_key_message(key, script.name, literals)) for key, where in keys.items()
              if key not in literals]
    if not unread:
        return
    (where, message), rest = unread[0], unread[1:]
    lines = [message, *(f"{w}: {m}" for w, m in rest),
             f"(checked against the string literals of {script}; {SKIP_FLAG} skips this check)"]
    raise InputError(where, "\n".join(lines))
