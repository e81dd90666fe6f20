"""Where a sweep keeps its results (`--results-dir`): a local folder, or a URI such as `s3://bucket/tune`.

Tune's experiment state and the sweep plan go to the results dir, through pyarrow's filesystems as Ray
Tune's own `storage_path` does, so a cluster keeps them on shared storage that outlives any node. The
trials' run directories always stay on a disk of the node that runs them: under the results dir when it
is a local folder, else under the node's temp folder at the same path on every node (their files reach
MLflow as artifacts).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from sweep.errors import InputError

FLAG = "--results-dir"
NODE_LOCAL_FOLDER = "gpt-sweep"
# A name is a folder with suffixes added (`-confirm`, `-verify-2`); file systems take 255 bytes.
MAX_NAME_LENGTH = 200


def is_uri(location: str) -> bool:
    return "://" in location


def normalize(location: str) -> str:
    """A URI as given (without a trailing slash); a local folder as an absolute path."""
    if is_uri(location):
        if not location.partition("://")[2].strip("/"):
            raise InputError(FLAG, f"{location!r} names no bucket or folder")
        return location.rstrip("/")
    return str(Path(location).resolve())


def check_name(name: str, where: str) -> str:
    """`name`, when it can name a sweep's folder: one path segment of letters, digits, '-', '_' and '.', which
    starts with neither '.' (no `.`, `..` or hidden folder) nor '-' (no flag look-alike)."""
    if not (name and len(name) <= MAX_NAME_LENGTH and all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)
            and name[0] not in ".-"):
        raise InputError(where, f"a sweep name is one folder name of at most {MAX_NAME_LENGTH} letters, digits, "
                                f"'-', '_' or '.', not starting with '.' or '-'; got {name!r}")
    return name


def join(location: str, *parts: str) -> str:
    if is_uri(location):
        return "/".join([location.rstrip("/"), *parts])
    return str(Path(location, *parts))


def free_name(base: str, location: str) -> str:
    """`base`, or `base-K` when `location` already holds a sweep (or verification) folder of that name."""
    name, k = base, 2
    while exists(join(location, name)):
        name, k = f"{base}-{k}", k + 1
    return name


def local_folder(location: str, name: str) -> Path:
    """The sweep's folder on this node's disk: trial run directories and other node-local files."""
    if is_uri(location):
        return Path(tempfile.gettempdir()) / NODE_LOCAL_FOLDER / name
    return Path(location) / name


def _filesystem(location: str):
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(location)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as e:
        raise InputError(FLAG, f"cannot open {location!r}: {e}") from None


def exists(location: str) -> bool:
    import pyarrow.fs

    fs, path = _filesystem(location)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def read_bytes(location: str) -> bytes:
    fs, path = _filesystem(location)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def read_text(location: str) -> str:
    return read_bytes(location).decode()


def write_text(location: str, text: str) -> None:
    """Replace the file whole: a reader never sees half of it."""
    fs, path = _filesystem(location)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.create_dir(parent, recursive=True)
    with fs.open_output_stream(path + ".tmp") as stream:
        stream.write(text.encode())
    fs.move(path + ".tmp", path)


def file_names(location: str) -> list[str]:
    """The names of the files (not folders) directly in the folder `location`."""
    import pyarrow.fs

    fs, path = _filesystem(location)
    return sorted(info.base_name for info in fs.get_file_info(pyarrow.fs.FileSelector(path))
                  if info.type == pyarrow.fs.FileType.File)


def move(location: str, target: str) -> None:
    """Move a file within one results dir (`target`'s folder is created)."""
    fs, path = _filesystem(location)
    _, to = _filesystem(target)
    fs.create_dir(to.rsplit("/", 1)[0], recursive=True)
    fs.move(path, to)
