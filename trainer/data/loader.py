"""Distributed token loading whose result does not depend on the number of ranks.

The train stream is the concatenation of the train shards in name order, repeated forever. Step i
consumes the global chunk stream[i*B : i*B + B + 1] (B = batch_tokens), split into M micro-batches of
m = B/M tokens; micro-batch k is chunk[k*m : (k+1)*m + 1] (inputs are its first m tokens, targets its
last m). Rank r of W owns micro-batches [r*M/W, (r+1)*M/W) and reads only that contiguous slice of the
stream, so 1 rank and 8 ranks train on exactly the same micro-batches.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from trainer.data import DataError
from trainer.data.shards import list_shards, read_shard, shard_token_count


class TrainLoader:
    def __init__(self, folder: str | os.PathLike, rank: int, world_size: int, batch_tokens: int,
                 seq_len: int, micro_batches: int):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        if batch_tokens <= 0 or seq_len <= 0 or micro_batches <= 0:
            raise ValueError("batch_tokens, seq_len and micro_batches must be positive")
        if micro_batches % world_size:
            raise ValueError(f"{micro_batches} micro-batches do not split over {world_size} ranks")
        if batch_tokens % (micro_batches * seq_len):
            raise ValueError(f"batch_tokens {batch_tokens} is not a multiple of "
                             f"micro_batches x seq_len = {micro_batches * seq_len}")
        self.rank, self.world_size = rank, world_size
        self.batch_tokens, self.seq_len, self.micro_batches = batch_tokens, seq_len, micro_batches
        self.micro_tokens = batch_tokens // micro_batches
        self.local_micro_batches = micro_batches // world_size
        self.files = list_shards(folder, "train")
        counts = [shard_token_count(p) for p in self.files]
        # ends[j] is the stream position just past shard j
        self.ends = np.cumsum(counts)
        self.total_tokens = int(self.ends[-1])
        if self.total_tokens == 0:
            raise DataError(f"{folder}: the train shards hold no tokens")
        self.step = 0
        self._open: dict[int, np.ndarray] = {}

    def _shard(self, j: int) -> np.ndarray:
        # keep at most the two most recent shards mapped: a slice spans at most a shard boundary or two
        if j not in self._open:
            if len(self._open) >= 2:
                self._open.pop(next(iter(self._open)))
            self._open[j] = read_shard(self.files[j])
        return self._open[j]

    def read(self, start: int, length: int) -> np.ndarray:
        """stream[start : start + length], wrapping around the end of the train shards."""
        out = np.empty(length, dtype=np.int64)
        filled = 0
        pos = start % self.total_tokens
        while filled < length:
            j = int(np.searchsorted(self.ends, pos, side="right"))
            shard_start = int(self.ends[j - 1]) if j else 0
            take = min(length - filled, int(self.ends[j]) - pos)
            offset = pos - shard_start
            out[filled:filled + take] = self._shard(j)[offset:offset + take]
            filled += take
            pos = (pos + take) % self.total_tokens
        return out

    def batch(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's (inputs, targets) micro-batches of `step`, each of shape (m/seq_len, seq_len)."""
        m, n = self.micro_tokens, self.local_micro_batches
        first = self.rank * n
        tokens = torch.from_numpy(self.read(step * self.batch_tokens + first * m, n * m + 1))
        rows = m // self.seq_len
        return [(tokens[k * m:(k + 1) * m].view(rows, self.seq_len),
                 tokens[k * m + 1:(k + 1) * m + 1].view(rows, self.seq_len)) for k in range(n)]

    def next_batch(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        batch = self.batch(self.step)
        self.step += 1
        return batch


def load_val_tokens(folder: str | os.PathLike, seq_len: int, limit_tokens: int = 0) -> torch.Tensor:
    """All val shards concatenated (int32), cut to `limit_tokens` if > 0, then to k*seq_len + 1 tokens."""
    parts = [np.asarray(read_shard(p)) for p in list_shards(folder, "val")]
    tokens = np.concatenate(parts)
    if limit_tokens > 0:
        tokens = tokens[:limit_tokens]
    usable = (tokens.size - 1) // seq_len * seq_len
    if usable <= 0:
        raise DataError(f"{Path(folder)}: the val shards hold {tokens.size} tokens"
                        f"{f' (limited to {limit_tokens})' if limit_tokens > 0 else ''}, "
                        f"fewer than one sequence of {seq_len} + 1")
    return torch.from_numpy(tokens[:usable + 1].astype(np.int32))


def val_slices(num_seqs: int, rank: int, world_size: int) -> range:
    """The validation sequences rank `rank` evaluates: contiguous, disjoint, covering all of them."""
    return range(num_seqs * rank // world_size, num_seqs * (rank + 1) // world_size)
