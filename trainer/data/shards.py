"""The token shard format shared by modded-nanogpt and parameter-golf.

A shard is a header of 256 little-endian int32 (`[0]` magic, `[1]` version, `[2]` token count) followed
by exactly that many little-endian uint16 tokens. Anything else is rejected with the file named, so a
truncated download can never be read as a shorter stream.
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

import numpy as np

from trainer.data import DataError

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")


class ShardError(DataError):
    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def shard_name(prefix: str, split: str, index: int) -> str:
    return f"{prefix}_{split}_{index:06d}.bin"


def write_shard(path: str | os.PathLike, tokens) -> Path:
    """Write `tokens` as one shard; the file appears complete or not at all."""
    path = Path(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ShardError(path, f"tokens must be one-dimensional, got shape {arr.shape}")
    if arr.size and arr.dtype != TOKEN_DTYPE:
        if not np.issubdtype(arr.dtype, np.integer):
            raise ShardError(path, f"tokens must be integers, got dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise ShardError(path, f"token ids must fit uint16 (0..65535), got range {lo}..{hi}")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, arr.size
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(header.tobytes())
            f.write(arr.astype(TOKEN_DTYPE, copy=False).tobytes())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def shard_token_count(path: str | os.PathLike) -> int:
    """Validate the header and file size of a shard and return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise ShardError(path, "no such shard file") from None
    except IsADirectoryError:
        raise ShardError(path, "is a directory, not a shard file") from None
    if len(raw) < HEADER_BYTES:
        raise ShardError(path, f"truncated header: {len(raw)} bytes, a shard header is {HEADER_BYTES} bytes")
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise ShardError(path, f"wrong magic number {int(header[0])} (expected {MAGIC}); not a token shard")
    if header[1] != VERSION:
        raise ShardError(path, f"unsupported shard version {int(header[1])} (expected {VERSION})")
    count = int(header[2])
    if count < 0:
        raise ShardError(path, f"negative token count {count} in header")
    expected = HEADER_BYTES + TOKEN_DTYPE.itemsize * count
    if size != expected:
        raise ShardError(path, f"file size {size} bytes does not match the header's {count} tokens "
                               f"(expected {expected} bytes; truncated or corrupt)")
    return count


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """The tokens of a shard as a read-only, memory-mapped uint16 array."""
    count = shard_token_count(path)
    if count == 0:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(count,))


def list_shards(folder: str | os.PathLike, split: str) -> list[Path]:
    """The `*_{split}_NNNNNN.bin` shards of `folder`, sorted by name."""
    folder = Path(folder)
    pattern = f"*_{split}_NNNNNN.bin"
    if not folder.is_dir():
        raise ShardError(folder, f"no such shard folder (looking for {pattern})")
    name_re = re.compile(rf".+_{re.escape(split)}_\d{{6}}\.bin")
    shards = sorted(p for p in folder.iterdir() if name_re.fullmatch(p.name) and p.is_file())
    if not shards:
        raise ShardError(folder, f"no {split} shards matching {pattern}")
    return shards
