"""Where a run's data comes from: `data.path` and `data.tokenizer`, or the generated corpus."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainer import distributed
from trainer.config import Config, ConfigError
from trainer.data.generated import ensure_generated_corpus


@dataclass
class DataSource:
    path: Path
    tokenizer: Path | None


def resolve_data(cfg: Config, d: distributed.Dist) -> DataSource:
    if cfg.data.path:
        path = Path(cfg.data.path)
        if not path.is_dir():
            raise ConfigError("data.path", f"no such folder: {path}")
        tokenizer = Path(cfg.data.tokenizer) if cfg.data.tokenizer else None
    else:
        # Rank 0 builds the cache entry first so the other ranks find it instead of building it too.
        if not d.is_main:
            distributed.barrier()
        # The generated text supports up to 1024 pieces; a larger model vocabulary is padding.
        corpus = ensure_generated_corpus(cfg.data.cache_dir or None, min(cfg.model.vocab_size, 1024))
        if d.is_main:
            distributed.barrier()
        path = corpus.path
        tokenizer = Path(cfg.data.tokenizer) if cfg.data.tokenizer else corpus.tokenizer
    if tokenizer is not None and not tokenizer.is_file():
        raise ConfigError("data.tokenizer", f"no such file: {tokenizer}")
    return DataSource(path, tokenizer)
