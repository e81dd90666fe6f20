"""The files and folders a user gives a command: read, or checked for writing, before anything starts.

Every input file (a search space, a trainer config, a sweep's plan, a script, a training log) is read
here, so each way a file fails to read (missing, a folder, unreadable, not UTF-8 text) is an InputError
naming the file (exit code 2), never a traceback. A folder a command will write into (`--results-dir`,
`compare --out`) is checked before the first write: a file standing where it, or a folder above it,
should be, or a folder that cannot be written, is found here rather than after a store was written.
"""
from __future__ import annotations

import os
from pathlib import Path

from sweep.errors import InputError
from sweep.stores import results_dir as results


def read_input_bytes(location: str | Path, where: str | None = None) -> bytes:
    """The bytes of the file at `location` (a local path, or a URI of the results dir); `where` names it in
    errors (default: the path)."""
    named = where is not None and where != str(location)
    where = where or str(location)
    try:
        if results.is_uri(str(location)):
            return results.read_bytes(str(location))
        return Path(location).read_bytes()
    except IsADirectoryError:
        raise InputError(where, f"{f'{location} is' if named else ''} a folder, not a file".strip()) from None
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(where, f"no such file{f': {location}' if named else ''}") from None
    except OSError as e:
        raise InputError(where, f"cannot read {location if named else 'it'}: {e.strerror or e}") from None


def read_input_text(location: str | Path, where: str | None = None) -> str:
    """The text of the file at `location`, which must be UTF-8 (see read_input_bytes)."""
    data = read_input_bytes(location, where)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        named = where is not None and where != str(location)
        what = f"{location} is not" if named else "not"
        raise InputError(where or str(location), f"{what} a text file (byte {e.start}, {data[e.start]:#04x}, is not "
                                                 f"UTF-8); is it the file you meant?") from None


def check_output_folder(path: Path, where: str) -> None:
    """The folder `path` exists and can be written, or can be made: its nearest existing ancestor is a
    writable folder and no file stands in its way."""
    path = Path(path).absolute()
    for folder in [path, *path.parents]:
        if not folder.exists():
            continue
        if not folder.is_dir():
            raise InputError(where, f"{folder} is a file, " + ("not a folder" if folder == path else
                                                                f"so the folder {path} cannot be made"))
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(where, f"cannot write in {folder}: permission denied")
        return
