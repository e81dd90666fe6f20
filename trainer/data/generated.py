"""The embedded default data set: the generated corpus, tokenized and sharded into a cache folder.

An entry is keyed by the generator version, seed, vocab size and sizes, built once and then reused.
Building happens in a temporary folder next to the entry which is renamed into place when complete, so
a reader never sees a half-built entry; concurrent builders (trials starting together, several ranks)
take a file lock so only one of them does the work, and should the lock not be shared (some network
file systems) the loser of the rename discards its copy and uses the winner's.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.data import DataError
from trainer.data.corpus import GENERATOR_VERSION, WordChain
from trainer.data.shards import shard_name, write_shard
from trainer.data.tokenizer import BOS_ID, load_tokenizer, train_tokenizer

DEFAULT_TRAIN_TOKENS = 3_000_000
DEFAULT_VAL_TOKENS = 150_000
SHARD_TOKENS = 1 << 20
TOKENIZER_DOCS = 4000   # the first train documents, about 2 MB of text
ENCODE_BLOCK_DOCS = 2000
PREFIX = "gen"
# at least the 4 special and 256 byte pieces plus every character of the text; at most about the number
# of merges the text offers (sentencepiece stops near 2,500)
VOCAB_RANGE = (320, 2048)


@dataclass(frozen=True)
class GeneratedCorpus:
    path: Path        # shard folder
    tokenizer: Path   # SentencePiece .model
    meta: dict


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """`cache_dir` if given, else $GPT_SWEEP_CACHE, else ~/.cache/gpt-sweep."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("GPT_SWEEP_CACHE") or Path.home() / ".cache" / "gpt-sweep").expanduser()


def entry_name(vocab_size: int, train_tokens: int, val_tokens: int, seed: int) -> str:
    return f"generated-{GENERATOR_VERSION}-s{seed}-v{vocab_size}-t{train_tokens}-e{val_tokens}"


def ensure_generated_corpus(cache_dir: str | os.PathLike | None, vocab_size: int, *,
                            train_tokens: int = DEFAULT_TRAIN_TOKENS, val_tokens: int = DEFAULT_VAL_TOKENS,
                            seed: int = 0) -> GeneratedCorpus:
    """The cached generated corpus for these settings, building it first if needed."""
    if not VOCAB_RANGE[0] <= vocab_size <= VOCAB_RANGE[1]:
        raise DataError(f"the generated corpus supports tokenizer vocab sizes {VOCAB_RANGE[0]}..{VOCAB_RANGE[1]}, "
                        f"got {vocab_size}; a model with a larger vocabulary can use a smaller tokenizer "
                        "(ids past it are padding)")
    if train_tokens <= 0 or val_tokens <= 0:
        raise DataError(f"train_tokens and val_tokens must be positive, got {train_tokens} and {val_tokens}")
    root = default_cache_dir(cache_dir)
    name = entry_name(vocab_size, train_tokens, val_tokens, seed)
    target = root / name
    if not (target / "meta.json").is_file():
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"{root}: cannot create the data cache folder ({e.strerror})") from None
        with _locked(root / f".{name}.lock"):
            if not (target / "meta.json").is_file():
                tmp = root / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                try:
                    tmp.mkdir()
                    build_corpus(tmp, vocab_size, train_tokens, val_tokens, seed)
                    publish(tmp, target)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
    meta = json.loads((target / "meta.json").read_text())
    return GeneratedCorpus(target, target / "tokenizer.model", meta)


@contextlib.contextmanager
def _locked(lock_path: Path):
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def publish(built: Path, target: Path) -> bool:
    """Rename a complete build into place. False if another builder got there first (then `built` is
    left for the caller to delete and the existing entry is used)."""
    try:
        os.rename(built, target)
        return True
    except OSError:
        if (target / "meta.json").is_file():
            return False
        raise


def build_corpus(out: Path, vocab_size: int, train_tokens: int, val_tokens: int, seed: int) -> dict:
    """Generate, tokenize and shard a corpus into `out`; returns the metadata also written to meta.json."""
    chain = WordChain.build(seed)
    train_docs = chain.documents(np.random.default_rng([seed, 1]))
    val_docs = chain.documents(np.random.default_rng([seed, 2]))

    first_texts = [chain.render(next(train_docs)) for _ in range(TOKENIZER_DOCS)]
    sp = load_tokenizer(train_tokenizer(first_texts, out / "tokenizer", vocab_size, seed=seed))

    def bos_prefixed(texts: list[str]) -> np.ndarray:
        return np.concatenate([np.array([BOS_ID] + ids, dtype=np.uint16) for ids in sp.encode(texts)])

    train_parts = [bos_prefixed(first_texts)]
    n_train, n_train_docs = train_parts[0].size, len(first_texts)
    while n_train < train_tokens:
        texts = [chain.render(next(train_docs)) for _ in range(ENCODE_BLOCK_DOCS)]
        train_parts.append(bos_prefixed(texts))
        n_train += train_parts[-1].size
        n_train_docs += len(texts)
    train = np.concatenate(train_parts)

    val_parts, val_symbols, n_val = [], [], 0
    while n_val < val_tokens:
        symbols = next(val_docs)
        val_symbols.append(symbols)
        val_parts.append(bos_prefixed([chain.render(symbols)]))
        n_val += val_parts[-1].size
    val = np.concatenate(val_parts)
    val_bytes = sum(len(chain.render(s).encode("utf-8")) for s in val_symbols)
    # each document but the last is followed by a BOS, which the model must predict: the end is paid for
    val_bits = sum(chain.nll_bits(s, ends=i < len(val_symbols) - 1) for i, s in enumerate(val_symbols))

    train_files = _write_split(out, "train", train)
    val_files = _write_split(out, "val", val)
    meta = {
        "generator": GENERATOR_VERSION,
        "seed": seed,
        "vocab_size": vocab_size,
        "num_words": len(chain.words),
        "doc_end": chain.doc_end,
        "entropy_rate_bpb": chain.entropy_rate_bpb(),
        "val_floor_bpb": val_bits / val_bytes,
        "unigram_bpb": _unigram_bits(val[1:]) * (val.size - 1) / val_bytes,
        "train_tokens": int(train.size),
        "val_tokens": int(val.size),
        "val_bytes": val_bytes,
        "train_docs": n_train_docs,
        "val_docs": len(val_symbols),
        "train_shards": train_files,
        "val_shards": val_files,
        "tokenizer_docs": TOKENIZER_DOCS,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _write_split(out: Path, split: str, tokens: np.ndarray) -> int:
    starts = range(0, tokens.size, SHARD_TOKENS)
    for i, start in enumerate(starts):
        write_shard(out / shard_name(PREFIX, split, i), tokens[start:start + SHARD_TOKENS])
    return len(starts)


def _unigram_bits(tokens: np.ndarray) -> float:
    """Entropy in bits per token of the empirical token distribution: what a context-free model gets."""
    p = np.bincount(tokens).astype(np.float64)
    p = p[p > 0] / tokens.size
    return float(-(p * np.log2(p)).sum())
