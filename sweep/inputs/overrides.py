"""Config values as `key=value` command-line overrides or as environment variables, written so the program
reads back the same value.

The trainer reads an override's text as the type its schema gives the key: a string as it is, a number
with int()/float(), a boolean as YAML `true`/`false`. So a float is written in full precision (repr), a
boolean in lower case, and a string unquoted. A script that reads its hyperparameters from the environment
parses them with `int(...)`, `float(...)` and `bool(int(...))` (parameter-golf's `train_gpt.py` does), so
there a boolean is written `1` / `0`.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import yaml

from sweep.errors import InputError

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")   # env-mode keys, trainer.env, the names a script reads


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot pass a non-finite value {value!r} as an override")
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    raise ValueError(f"cannot pass a {type(value).__name__} as an override: {value!r}")


def format_env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return format_value(value)


def format_override(key: str, value: Any) -> str:
    return f"{key}={format_value(value)}"


def format_overrides(fixed: dict[str, Any], values: dict[str, Any]) -> list[str]:
    """A trial's overrides: the fixed keys, then its swept values."""
    return [format_override(k, v) for k, v in {**fixed, **values}.items()]


def check_key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise InputError(where, f"{key!r} is not a dotted config key")
    return key


def check_env_name(key: Any, where: str) -> str:
    if not isinstance(key, str) or not ENV_NAME.match(key):
        raise InputError(where, f"{key!r} is not an environment variable name (capitals, digits and '_', "
                                f"not starting with a digit)")
    return key


def parse_set(item: str, check: Callable[[Any, str], str] = check_key) -> tuple[str, Any]:
    """`--set key=value` as (key, value), the value read as YAML like the trainer does; `check` checks the key
    as the trainer names its keys (by default a dotted config key)."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise InputError("--set", f"{item!r} must look like key=value")
    key = check(key.strip(), "--set")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)) or value is None:
        raise InputError("--set", f"{key}: expected a single value, got {raw!r}")
    return key, value
