"""SentencePiece tokenizers with the parameter-golf settings, and the byte accounting behind val_bpb.

val_bpb must not depend on the tokenizer, so the loss is divided by the bytes of text the target tokens
stand for. Per target token: the UTF-8 length of its piece without the leading U+2581, plus one byte for
that U+2581 (a space) unless the previous token is a control/unknown/unused token (the space a BOS
"swallows" is not text); a byte-fallback piece <0xNN> is one byte; control/unknown/unused tokens and
ids past the tokenizer's vocabulary (padding of the model's vocabulary) are zero bytes. Over a
BOS-prefixed document this adds up to the UTF-8 length of the document's normalised text.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import sentencepiece as spm
import torch

from trainer.data import DataError

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPACE_MARK = "\u2581"
# documents longer than this many bytes are skipped in tokenizer training (SentencePiece defaults to 4192)
MAX_TRAIN_DOC_BYTES = 1 << 16


def train_tokenizer(text: Iterable[str] | str | os.PathLike, model_prefix: str | os.PathLike,
                    vocab_size: int, max_docs: int = 200_000, seed: int = 0) -> Path:
    """Train a BPE model with the golf settings; returns the `.model` path.

    `text` is an iterable of documents or a text file with one document per line. At most `max_docs`
    documents are used (a seeded random sample when there are more), so training stays fast.
    """
    if vocab_size <= UNK_ID + 256 + 1:
        raise DataError(f"tokenizer vocab_size {vocab_size} is too small: 4 special ids and 256 byte "
                        "pieces come first")
    if vocab_size > 65536:
        raise DataError(f"tokenizer vocab_size {vocab_size} does not fit uint16 shards (max 65536)")
    prefix = Path(model_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    options = dict(
        model_prefix=str(prefix), model_type="bpe", vocab_size=vocab_size,
        byte_fallback=True, split_digits=True, normalization_rule_name="nmt_nfkc", add_dummy_prefix=False,
        pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID, character_coverage=0.9995,
        input_sentence_size=max_docs, shuffle_input_sentence=True, max_sentence_length=MAX_TRAIN_DOC_BYTES,
        num_threads=1, minloglevel=2,
    )
    if isinstance(text, (str, os.PathLike)):
        if not Path(text).is_file():
            raise DataError(f"{text}: no such text file to train a tokenizer on")
        options["input"] = str(text)
    else:
        options["sentence_iterator"] = iter(text)
    spm.set_random_generator_seed(seed)
    try:
        spm.SentencePieceTrainer.train(**options)
    except RuntimeError as e:
        raise DataError(f"training a {vocab_size}-piece tokenizer at {prefix}.model failed: {e}") from None
    model = prefix.with_suffix(".model")
    got = load_tokenizer(model).vocab_size()
    if got != vocab_size:
        raise DataError(f"{model}: trained {got} pieces, asked for {vocab_size}")
    return model


def load_tokenizer(path: str | os.PathLike) -> spm.SentencePieceProcessor:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such tokenizer model file")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(str(path))
    except (OSError, RuntimeError) as e:
        raise DataError(f"{path}: not a SentencePiece model ({e})") from None
    return sp


@dataclass(frozen=True)
class ByteLUTs:
    base_bytes: torch.Tensor         # int16: bytes of the piece without its leading U+2581
    has_leading_space: torch.Tensor  # bool: the piece starts with U+2581
    is_boundary: torch.Tensor        # bool: control/unknown/unused or past the tokenizer's vocabulary


def build_byte_luts(sp: spm.SentencePieceProcessor, vocab_size: int, device: torch.device | str = "cpu") -> ByteLUTs:
    """Lookup tables over max(vocab_size, tokenizer vocabulary) ids."""
    n_sp = int(sp.vocab_size())
    size = max(n_sp, vocab_size)
    base = np.zeros(size, dtype=np.int16)
    space = np.zeros(size, dtype=bool)
    boundary = np.ones(size, dtype=bool)
    for i in range(n_sp):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith(SPACE_MARK):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return ByteLUTs(torch.tensor(base, device=device), torch.tensor(space, device=device),
                    torch.tensor(boundary, device=device))


def target_bytes(prev_ids: torch.Tensor, tgt_ids: torch.Tensor, luts: ByteLUTs) -> torch.Tensor:
    """Bytes of text each target token stands for (int32, same shape as `tgt_ids`)."""
    prev_ids, tgt_ids = prev_ids.long(), tgt_ids.long()
    counted_space = luts.has_leading_space[tgt_ids] & ~luts.is_boundary[prev_ids]
    return luts.base_bytes[tgt_ids].to(torch.int32) + counted_space.to(torch.int32)


def bits_per_byte(loss_nats_sum: float, byte_count: float) -> float:
    if byte_count <= 0:
        raise ValueError(f"bits per byte needs a positive byte count, got {byte_count}")
    return float(loss_nats_sum) / math.log(2.0) / float(byte_count)
