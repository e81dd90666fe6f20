"""Turn a user's text into train/val shards.

Inputs are `.txt` files, each file one document, and `.jsonl` files, one document per line in its
"text" field (blank lines are skipped). Documents that are empty after stripping whitespace are
skipped. Every input is checked before any tokenizer training or shard writing starts. Documents are
numbered in input order and spread evenly over the validation split (document 0 always goes to
validation when `val_fraction` > 0); each is written as BOS followed by its tokens, with no EOS, the
parameter-golf layout.
"""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from trainer.data import DataError
from trainer.data.shards import shard_name, write_shard
from trainer.data.tokenizer import BOS_ID, build_byte_luts, load_tokenizer, target_bytes, train_tokenizer

SUFFIXES = (".txt", ".jsonl")
DEFAULT_SHARD_TOKENS = 100_000_000  # the parameter-golf export's shard size
ENCODE_BATCH_DOCS = 1024


def iter_documents(inputs: Iterable[str | os.PathLike]) -> Iterator[str]:
    for path in map(Path, inputs):
        if path.suffix == ".txt":
            text = _read_text(path).strip()
            if text:
                yield text
            continue
        if path.suffix != ".jsonl":
            raise DataError(f"{path}: unsupported input type (expected {' or '.join(SUFFIXES)})")
        with open(path, encoding="utf-8") as f:
            try:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                        raise DataError(f"{path}:{lineno}: no \"text\" string field")
                    text = record["text"].strip()
                    if text:
                        yield text
            except UnicodeDecodeError as e:
                raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start} of a block)") from None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def is_val_doc(index: int, val_fraction: float) -> bool:
    """Exactly ceil(n * val_fraction) of the first n documents are validation documents."""
    return math.ceil((index + 1) * val_fraction) > math.ceil(index * val_fraction)


class _ShardWriter:
    def __init__(self, out_dir: Path, prefix: str, split: str, shard_tokens: int):
        self.out_dir, self.prefix, self.split, self.shard_tokens = out_dir, prefix, split, shard_tokens
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.shards = 0
        self.tokens = 0
        self.docs = 0

    def add(self, ids: list[int]) -> None:
        self.buffer.append(np.array([BOS_ID] + ids, dtype=np.uint16))
        self.buffered += len(ids) + 1
        self.tokens += len(ids) + 1
        self.docs += 1
        while self.buffered >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, count: int) -> None:
        tokens = np.concatenate(self.buffer)
        write_shard(self.out_dir / shard_name(self.prefix, self.split, self.shards), tokens[:count])
        self.shards += 1
        self.buffer = [tokens[count:]]
        self.buffered = tokens.size - count

    def close(self) -> None:
        if self.buffered:
            self._flush(self.buffered)


def tokenize_files(inputs: list[str | os.PathLike], out_dir: str | os.PathLike,
                   tokenizer: str | os.PathLike | None = None, vocab_size: int = 1024,
                   val_fraction: float = 0.01, prefix: str = "data",
                   shard_tokens: int = DEFAULT_SHARD_TOKENS) -> dict:
    """Tokenize `inputs` into `{prefix}_train_NNNNNN.bin` / `{prefix}_val_NNNNNN.bin` shards in `out_dir`.

    Without `tokenizer`, a `vocab_size` BPE tokenizer with the golf settings is trained on the train
    documents and saved as `out_dir/tokenizer.model`. Returns a summary, also written to meta.json.
    """
    inputs = [Path(p) for p in inputs]
    out = Path(out_dir)
    _check_arguments(inputs, out, tokenizer, val_fraction, prefix, shard_tokens)

    n_docs = sum(1 for _ in iter_documents(inputs))
    n_val = sum(is_val_doc(i, val_fraction) for i in range(n_docs))
    if n_docs - n_val < 1:
        raise DataError(f"{n_docs} document(s) in the inputs leave none for training "
                        f"with val_fraction {val_fraction}")

    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        train_docs = (d for i, d in enumerate(iter_documents(inputs)) if not is_val_doc(i, val_fraction))
        tokenizer = train_tokenizer(train_docs, out / "tokenizer", vocab_size)
    sp = load_tokenizer(tokenizer)
    luts = build_byte_luts(sp, int(sp.vocab_size()))

    writers = {split: _ShardWriter(out, prefix, split, shard_tokens) for split in ("train", "val")}
    val_bytes = 0
    index = 0
    docs = iter_documents(inputs)
    while batch := [d for _, d in zip(range(ENCODE_BATCH_DOCS), docs)]:
        for ids in sp.encode(batch):
            if is_val_doc(index, val_fraction):
                writers["val"].add(ids)
                seq = torch.tensor([BOS_ID] + ids)
                val_bytes += int(target_bytes(seq[:-1], seq[1:], luts).sum())
            else:
                writers["train"].add(ids)
            index += 1
    for w in writers.values():
        w.close()

    summary = {
        "inputs": [str(p) for p in inputs],
        "out_dir": str(out),
        "tokenizer": str(Path(tokenizer)),
        "tokenizer_vocab_size": int(sp.vocab_size()),
        "prefix": prefix,
        "documents": n_docs,
        "val_fraction": val_fraction,
        "val_bytes": val_bytes,
    }
    for split, w in writers.items():
        summary.update({f"{split}_docs": w.docs, f"{split}_tokens": w.tokens, f"{split}_shards": w.shards})
    (out / "meta.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _check_arguments(inputs: list[Path], out: Path, tokenizer, val_fraction: float, prefix: str,
                     shard_tokens: int) -> None:
    if not inputs:
        raise DataError("no input files given")
    for path in inputs:
        if path.suffix not in SUFFIXES:
            raise DataError(f"{path}: unsupported input type (expected {' or '.join(SUFFIXES)})")
        if not path.is_file():
            raise DataError(f"{path}: no such input file")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", prefix):
        raise DataError(f"shard prefix {prefix!r} must be letters, digits, '.', '_' or '-'")
    if shard_tokens <= 0:
        raise DataError(f"shard_tokens must be positive, got {shard_tokens}")
    if tokenizer is not None:
        sp = load_tokenizer(tokenizer)
        if sp.bos_id() != BOS_ID:
            raise DataError(f"{tokenizer}: BOS id is {sp.bos_id()}, the shard layout needs BOS = {BOS_ID}")
        if sp.vocab_size() > 65536:
            raise DataError(f"{tokenizer}: {sp.vocab_size()} pieces do not fit uint16 shards")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    existing = sorted(out.glob(f"{prefix}_*.bin")) if out.is_dir() else []
    if existing or (tokenizer is None and (out / "tokenizer.model").exists()):
        raise DataError(f"{out}: already holds a data set ({(existing or [out / 'tokenizer.model'])[0].name}); "
                        "choose an empty folder or another prefix")
