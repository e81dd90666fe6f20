"""Tokenizer settings and the parameter-golf byte accounting behind val_bpb."""
import math

import numpy as np
import pytest
import torch

from trainer.data import DataError
from trainer.data.corpus import WordChain
from trainer.data.generated import ensure_generated_corpus
from trainer.data.shards import list_shards, read_shard
from trainer.data.tokenizer import BOS_ID, bits_per_byte, build_byte_luts, load_tokenizer, target_bytes, train_tokenizer

MODEL_VOCAB = 1024  # larger than the tokenizer's 512: ids 512..1023 are padding


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return ensure_generated_corpus(tmp_path_factory.mktemp("cache"), 512, train_tokens=100_000,
                                   val_tokens=30_000)


@pytest.fixture(scope="module")
def sp(corpus):
    return load_tokenizer(corpus.tokenizer)


@pytest.fixture(scope="module")
def luts(sp):
    return build_byte_luts(sp, MODEL_VOCAB)


def _bytes(luts, pairs):
    prev, tgt = torch.tensor([p for p, _ in pairs]), torch.tensor([t for _, t in pairs])
    return target_bytes(prev, tgt, luts).tolist()


def test_hand_built_pairs(sp, luts):
    space_mu, ail, lone_space = sp.piece_to_id("\u2581mu"), sp.piece_to_id("ail"), sp.piece_to_id("\u2581")
    byte_c3, period = sp.piece_to_id("<0xC3>"), sp.piece_to_id(".")
    unk, pad, eos = 3, 0, 2
    assert sp.is_byte(byte_c3) and sp.is_unknown(unk) and unk not in (ail, space_mu, lone_space, period)
    padding = 700  # past the tokenizer's vocabulary
    cases = [
        ((BOS_ID, space_mu), 2),      # a BOS swallows the leading space: "mu"
        ((period, space_mu), 3),      # after a normal token the space is text: " mu"
        ((unk, space_mu), 2),         # unknown is a boundary like BOS
        ((padding, space_mu), 2),     # and so is padding
        ((period, ail), 3),           # no leading space: just "ail"
        ((period, lone_space), 1),    # a bare U+2581 is one space byte...
        ((BOS_ID, lone_space), 0),    # ...except right after BOS
        ((period, byte_c3), 1),       # byte-fallback pieces are one byte
        ((BOS_ID, byte_c3), 1),
        ((period, unk), 0),           # control, unknown and padding stand for no text
        ((period, BOS_ID), 0),
        ((period, eos), 0),
        ((period, pad), 0),
        ((period, padding), 0),
    ]
    assert _bytes(luts, [pair for pair, _ in cases]) == [expected for _, expected in cases]


def test_lut_shapes(sp, luts):
    assert luts.base_bytes.dtype == torch.int16 and luts.has_leading_space.dtype == torch.bool
    assert luts.base_bytes.numel() == luts.is_boundary.numel() == MODEL_VOCAB
    assert luts.is_boundary[sp.vocab_size():].all() and not luts.base_bytes[sp.vocab_size():].any()
    assert build_byte_luts(sp, 100).base_bytes.numel() == sp.vocab_size()


def test_document_bytes_add_up_to_its_utf8_length(sp, luts):
    text = "Plail mu, caf\u00e9 123 na\u00efve \u2014 \u2713 \U0001F642 done."
    assert sp.normalize(text).replace("\u2581", " ") == text  # NFKC leaves it alone
    ids = [BOS_ID] + sp.encode(text)
    assert any(sp.is_byte(i) for i in ids), "the text exercises byte fallback"
    seq = torch.tensor(ids)
    assert int(target_bytes(seq[:-1], seq[1:], luts).sum()) == len(text.encode("utf-8"))


def test_val_shard_bytes_match_the_corpus_text(corpus, luts):
    tokens = torch.from_numpy(np.concatenate([read_shard(p) for p in list_shards(corpus.path, "val")])
                              .astype(np.int64))
    total = target_bytes(tokens[:-1], tokens[1:], luts).to(torch.float64).sum().item()
    assert total == corpus.meta["val_bytes"]


def test_bits_per_byte():
    assert bits_per_byte(100 * math.log(2), 50) == pytest.approx(2.0)
    assert bits_per_byte(0.0, 10) == 0.0
    with pytest.raises(ValueError, match="positive byte count"):
        bits_per_byte(1.0, 0)


@pytest.fixture(scope="module")
def training_text():
    chain = WordChain.build(seed=2)
    stream = chain.documents(np.random.default_rng(0))
    return [chain.render(next(stream)) for _ in range(800)] + ["12345 67890 12345 1999 2024."] * 2000


def test_train_tokenizer_golf_settings(tmp_path, training_text):
    sp = load_tokenizer(train_tokenizer(training_text, tmp_path / "a", 400))
    assert sp.vocab_size() == 400
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<s>", "</s>", "<unk>"]
    assert (sp.pad_id(), sp.bos_id(), sp.eos_id(), sp.unk_id()) == (0, 1, 2, 3)
    assert all(sp.is_byte(i) for i in range(4, 260)) and sp.id_to_piece(4) == "<0x00>"
    # without split_digits this training text makes "12345" and "▁1999" single pieces
    assert sp.encode("12345 1999", out_type=str) == list("12345") + ["\u2581"] + list("1999")
    assert not sp.encode(training_text[0], out_type=str)[0].startswith("\u2581")  # no dummy prefix
    assert sp.decode(sp.encode("\u00bd\uff21")) == "1\u20442A"  # nmt_nfkc normalisation
    again = load_tokenizer(train_tokenizer(training_text, tmp_path / "b", 400))
    assert [sp.id_to_piece(i) for i in range(400)] == [again.id_to_piece(i) for i in range(400)]


def test_train_tokenizer_from_a_file(tmp_path, training_text):
    path = tmp_path / "text.txt"
    path.write_text("\n".join(training_text))
    sp = load_tokenizer(train_tokenizer(path, tmp_path / "f", 400))
    assert sp.vocab_size() == 400


def test_tokenizer_errors(tmp_path, training_text):
    with pytest.raises(DataError, match="too small"):
        train_tokenizer(training_text, tmp_path / "s", 200)
    with pytest.raises(DataError) as e:
        train_tokenizer(training_text, tmp_path / "big", 30_000)
    assert str(tmp_path / "big.model") in str(e.value)
    with pytest.raises(DataError, match="no such text file"):
        train_tokenizer(tmp_path / "missing.txt", tmp_path / "m", 400)
    with pytest.raises(DataError, match="no such tokenizer model file"):
        load_tokenizer(tmp_path / "missing.model")
    (tmp_path / "junk.model").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a SentencePiece model"):
        load_tokenizer(tmp_path / "junk.model")
