"""What a trial runs: the `trainer:` block of a space file (or `--trainer-cmd` / `--trainer-params`).

```yaml
trainer:
  command: torchrun --standalone --nproc_per_node=8 train_gpt.py   # split like a shell would
  params: env          # env: swept and fixed keys are environment variables; args: key=value arguments
  env: {DATA_PATH: ./data/datasets/fineweb10B_sp1024/}            # passed to every trial as is
```

No command means the built-in trainer, which takes `key=value` arguments. `script_of` finds the Python file
a command runs (`FILE.py`, `python FILE`, `python -m torch.distributed.run ... FILE`, `torchrun ... FILE`),
resolved from the folder the trial runs in, so its source can be checked for the keys a sweep sets
(docs/spaces.md, "Another program: args and env mode").
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.errors import InputError
from sweep.inputs.overrides import check_env_name, format_env_value, format_value

ENV, ARGS = "env", "args"
PARAMS_MODES = (ENV, ARGS)   # the values of `params`
BLOCK_KEYS = ("command", "params", "env")
SEED_KEY, SEED_ENV = "seed", "SEED"   # where the seed reaches the built-in trainer (a key) and an env-mode script
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_TORCHRUN_MODULES = ("torch.distributed.run",)
_PYTHON_OPTIONS_WITH_VALUE = ("-W", "-X")


@dataclass(frozen=True)
class TrainerSpec:
    command: str = ""                  # "" = the built-in trainer
    params: str = ARGS                 # how swept and fixed keys reach the command
    env: dict[str, str] = field(default_factory=dict)  # trainer.env, as the command gets it

    @property
    def env_mode(self) -> bool:
        return self.params == ENV

    @property
    def seed_key(self) -> str:
        """The key that sets a run's seed."""
        return SEED_ENV if self.env_mode else SEED_KEY

    def text(self, value: Any) -> str:
        """A swept or fixed value as the command receives it."""
        return format_env_value(value) if self.env_mode else format_value(value)


def parse_trainer_block(data: Any, source: str) -> TrainerSpec:
    where = f"{source}: trainer"
    if data is None:
        return TrainerSpec()
    if not isinstance(data, dict):
        raise InputError(where, "must be a mapping with command, params and env")
    for key in data:
        if key not in BLOCK_KEYS:
            raise InputError(f"{where}.{key}", f"unknown field (known: {', '.join(BLOCK_KEYS)})")
    command = data.get("command") or ""
    if not isinstance(command, str):
        raise InputError(f"{where}.command", f"must be a command line, got {command!r}")
    params = data.get("params", ARGS)
    if params not in PARAMS_MODES:
        raise InputError(f"{where}.params", f"must be env or args, got {params!r}")
    env = data.get("env") or {}
    if not isinstance(env, dict):
        raise InputError(f"{where}.env", "must be a mapping of environment variable names to values")
    passed = {}
    for key, value in env.items():
        check_env_name(key, f"{where}.env")
        if isinstance(value, (dict, list)) or value is None:
            raise InputError(f"{where}.env.{key}", f"expected a single value, got {value!r}")
        passed[key] = format_env_value(value)
    return TrainerSpec(command, params, passed)


def split_command(command: str, where: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise InputError(where, f"cannot split {command!r}: {e}") from None
    if not argv:
        raise InputError(where, "is empty")
    return argv


def _program(name: str, cwd: Path) -> Path:
    """The file `name` runs as the first word of a command started in `cwd`: a bare name is looked up on
    PATH, as the trial's process does."""
    found = None if os.sep in name else shutil.which(name)
    return Path(found) if found else cwd / name


def _torchrun_script(args: list[str], cwd: Path, where: str) -> Path | None:
    # torchrun's own parser, so its options are read exactly as the trial's torchrun will read them.
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()

    def refuse(message: str):
        raise InputError(where, f"torchrun would reject its arguments: {message}")

    parser.error = refuse
    parsed = parser.parse_args(args)
    if parsed.module:
        return None
    if parsed.no_python:
        return _command_script([parsed.training_script, *parsed.training_script_args], cwd, where)
    return cwd / parsed.training_script


def _python_script(args: list[str], cwd: Path, where: str) -> Path | None:
    it = iter(args)
    for arg in it:
        if arg == "-m":
            module = next(it, "")
            return _torchrun_script(list(it), cwd, where) if module in _TORCHRUN_MODULES else None
        if arg.startswith("-c") or arg == "-":
            return None
        if arg in _PYTHON_OPTIONS_WITH_VALUE:
            next(it, None)
        elif not arg.startswith("-"):
            return cwd / arg
    return None


def _command_script(argv: list[str], cwd: Path, where: str) -> Path | None:
    name = Path(argv[0]).name
    if name == "torchrun":
        return _torchrun_script(argv[1:], cwd, where)
    if _PYTHON.match(name):
        return _python_script(argv[1:], cwd, where)
    if name.endswith(".py"):
        return _program(argv[0], cwd)
    return None


def script_of(command: str, cwd: str | Path, where: str) -> Path | None:
    """The Python file `command` runs when started in `cwd`, or None when it runs no file (a module, a
    binary, a shell script); a file that is not there is an InputError naming where to put it."""
    cwd = Path(cwd)
    script = _command_script(split_command(command, where), cwd, where)
    if script is not None and not script.is_file():
        raise InputError(where, f"runs {script}, which does not exist (trials run in {cwd}, so relative paths "
                                f"start there)")
    return script
