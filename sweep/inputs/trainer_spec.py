"""What a trial runs: the `trainer:` block of a space file (or `--trainer-cmd` / `--trainer-params`).

```yaml
trainer:
  command: torchrun --standalone --nproc_per_node=8 train_gpt.py   # split like a shell would
  params: env          # env: swept and fixed keys are environment variables; args: key=value arguments;
                       # source: addresses of literal sites in the script, edited in a copy per trial
  env: {DATA_PATH: ./data/datasets/fineweb10B_sp1024/}            # passed to every trial as is
```

No command means the built-in trainer, which takes `key=value` arguments. `script_of` finds the Python file
a command runs (`FILE.py`, `python FILE`, `python -m torch.distributed.run ... FILE`, `torchrun ... FILE`),
resolved from the folder the trial runs in, so its source can be checked for the keys a sweep sets
(docs/spaces.md, "Another program: args and env mode"); `with_script` puts another file in its place, which is how a
source-mode trial runs its edited copy (docs/source_mode.md).
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
from sweep.inputs.overrides import check_env_name, check_key, format_env_value, format_value
from sweep.inputs.source_sites import check_address, python_literal

ENV, ARGS, SOURCE = "env", "args", "source"
PARAMS_MODES = (ENV, ARGS, SOURCE)   # the values of `params`
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
    # Source mode only: the site that sets a run's seed (the space's `seed:`; "" = the script has none),
    # the templates of the params that give one (`expr:`), and the sha256 of the script as `sweep run`
    # checked it, so that every trial edits that same script ("" until it is checked).
    seed_site: str = ""
    exprs: dict[str, str] = field(default_factory=dict)
    script_sha256: str = ""

    @property
    def env_mode(self) -> bool:
        return self.params == ENV

    @property
    def source_mode(self) -> bool:
        return self.params == SOURCE

    @property
    def seed_key(self) -> str:
        """The key that sets a run's seed; "" for a source-mode script that names no seed site."""
        if self.source_mode:
            return self.seed_site
        return SEED_ENV if self.env_mode else SEED_KEY

    def text(self, value: Any) -> str:
        """A swept or fixed value as the command receives it (in source mode: as written into the script)."""
        if self.source_mode:
            return python_literal(value)
        return format_env_value(value) if self.env_mode else format_value(value)

    def check_key(self, key: Any, where: str) -> str:
        """A swept or fixed key as this mode names them: an address, an environment variable, a config key."""
        if self.source_mode:
            return check_address(key, where)
        return check_env_name(key, where) if self.env_mode else check_key(key, where)


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
        raise InputError(f"{where}.params", f"must be env, args or source, got {params!r}")
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


# Each finder returns (the index of the word of `args` that names the script, the script), or None.


def _torchrun_script(args: list[str], cwd: Path, where: str) -> tuple[int, Path] | None:
    # torchrun's own parser, so its options are read exactly as the trial's torchrun will read them.
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()

    def refuse(message: str):
        raise InputError(where, f"torchrun would reject its arguments: {message}")

    parser.error = refuse
    parsed = parser.parse_args(args)
    if parsed.module:
        return None
    # The script's arguments are the tail of the command, after the script itself.
    index = len(args) - len(parsed.training_script_args) - 1
    if parsed.no_python:
        found = _command_script(args[index:], cwd, where)
        return None if found is None else (index + found[0], found[1])
    return index, cwd / parsed.training_script


def _python_script(args: list[str], cwd: Path, where: str) -> tuple[int, Path] | None:
    it = iter(enumerate(args))
    for index, arg in it:
        if arg == "-m":
            module = next(it, (0, ""))[1]
            if module not in _TORCHRUN_MODULES:
                return None
            start = index + 2
            found = _torchrun_script(args[start:], cwd, where)
            return None if found is None else (start + found[0], found[1])
        if arg.startswith("-c") or arg == "-":
            return None
        if arg in _PYTHON_OPTIONS_WITH_VALUE:
            next(it, None)
        elif not arg.startswith("-"):
            return index, cwd / arg
    return None


def _command_script(argv: list[str], cwd: Path, where: str) -> tuple[int, Path] | None:
    name = Path(argv[0]).name
    if name == "torchrun":
        found = _torchrun_script(argv[1:], cwd, where)
    elif _PYTHON.match(name):
        found = _python_script(argv[1:], cwd, where)
    else:
        return (0, _program(argv[0], cwd)) if name.endswith(".py") else None
    return None if found is None else (1 + found[0], found[1])


def _found_script(command: str, cwd: str | Path, where: str) -> tuple[int, Path] | None:
    cwd = Path(cwd)
    found = _command_script(split_command(command, where), cwd, where)
    if found is not None and not found[1].is_file():
        raise InputError(where, f"runs {found[1]}, which does not exist (trials run in {cwd}, so relative paths "
                                f"start there)")
    return found


def script_of(command: str, cwd: str | Path, where: str) -> Path | None:
    """The Python file `command` runs when started in `cwd`, or None when it runs no file (a module, a
    binary, a shell script); a file that is not there is an InputError naming where to put it."""
    found = _found_script(command, cwd, where)
    return None if found is None else found[1]


def with_script(command: str, cwd: str | Path, script: Path, where: str) -> list[str]:
    """`command` split into words, running `script` in place of the Python file it names."""
    argv = split_command(command, where)
    found = _found_script(command, cwd, where)
    if found is None:
        raise InputError(where, f"{command!r} runs no Python file to put {script} in place of")
    argv[found[0]] = str(script)
    return argv
