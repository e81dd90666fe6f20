"""The generated corpus: determinism, exact entropy, the cache entry and concurrent builders.

The full-size default entry is built once per test session into a session temporary cache folder (about
2 s), never into the user's real cache; the other tests build small corpora.
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from paths import REPO

from trainer.data.cli import main
from trainer.data.corpus import WordChain
from trainer.data.generated import build_corpus, default_cache_dir, ensure_generated_corpus, entry_name, publish
from trainer.data.shards import list_shards, read_shard
from trainer.data.tokenizer import BOS_ID, load_tokenizer

SMALL = dict(train_tokens=200_000, val_tokens=40_000)


@pytest.fixture(scope="module")
def chain():
    return WordChain.build(seed=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return ensure_generated_corpus(tmp_path_factory.mktemp("cache"), 512, **SMALL)


def _docs(chain, seed, count):
    stream = chain.documents(np.random.default_rng(seed))
    return [next(stream) for _ in range(count)]


def test_same_seed_same_text_other_seed_other_text(chain):
    again = WordChain.build(seed=0)
    assert again.words == chain.words and np.array_equal(again.transition, chain.transition)
    text = [chain.render(d) for d in _docs(chain, 7, 50)]
    assert text == [again.render(d) for d in _docs(again, 7, 50)]
    assert text != [chain.render(d) for d in _docs(chain, 8, 50)]
    assert WordChain.build(seed=1).words != chain.words


def test_text_shape_and_invertibility(chain):
    assert 200 <= len(chain.words) <= 1000 and all(re.fullmatch(r"[a-z]+", w) for w in chain.words)
    for doc in _docs(chain, 3, 200):
        text = chain.render(doc)
        assert text.isascii() and "  " not in text and text == text.strip()
        # every sentence starts with a capital and ends with a period followed by one space
        for sentence in text[:-1].split(". "):
            assert sentence[0].isupper() and not any(c.isupper() for c in sentence[1:])
        assert text.endswith(".")
        assert chain.parse(text) == doc
    with pytest.raises(ValueError):
        chain.parse("Notaword.")


def test_word_frequencies_are_zipf_like(chain):
    pi = chain.stationary()
    assert np.allclose(pi @ chain.transition, pi, atol=1e-12) and math.isclose(pi.sum(), 1.0)
    words = np.sort(pi[:len(chain.words)])[::-1] / pi[:len(chain.words)].sum()
    # a heavy head and a long tail, as in natural text
    assert words[:30].sum() > 0.4 and words[-150:].sum() < 0.2 and words[-1] > 0


def test_floor_matches_the_analytic_entropy_rate(chain):
    docs = _docs(chain, 11, 3000)
    bits = sum(chain.nll_bits(d, ends=True) for d in docs)
    text_bytes = sum(len(chain.render(d)) for d in docs)
    assert bits / text_bytes == pytest.approx(chain.entropy_rate_bpb(), rel=0.01)


def test_meta_floor_is_the_exact_nll_of_the_val_shard_text(chain, small):
    """Recompute the floor from the written val shard alone: decode it, parse it, score it."""
    sp = load_tokenizer(small.tokenizer)
    assert sp.vocab_size() == 512
    tokens = np.concatenate([read_shard(p) for p in list_shards(small.path, "val")]).tolist()
    assert tokens[0] == BOS_ID
    docs, current = [], []
    for t in tokens[1:] + [BOS_ID]:
        if t == BOS_ID:
            docs.append(sp.decode(current))
            current = []
        else:
            current.append(t)
    bits = sum(chain.nll_bits(chain.parse(d), ends=i < len(docs) - 1) for i, d in enumerate(docs))
    text_bytes = sum(len(d.encode("utf-8")) for d in docs)
    meta = small.meta
    assert (meta["val_docs"], meta["val_bytes"], meta["val_tokens"]) == (len(docs), text_bytes, len(tokens))
    assert meta["val_floor_bpb"] == pytest.approx(bits / text_bytes, rel=1e-12)
    assert meta["val_floor_bpb"] == pytest.approx(meta["entropy_rate_bpb"], rel=0.03)
    # a context-free model is far from the floor: the corpus rewards learning the word chain
    assert meta["unigram_bpb"] > meta["val_floor_bpb"] + 0.5


def test_build_is_deterministic(tmp_path, small):
    other = ensure_generated_corpus(tmp_path, 512, **SMALL)
    assert other.path != small.path and other.meta == small.meta
    names = [p.name for p in sorted(small.path.glob("*.bin"))]
    assert names == [p.name for p in sorted(other.path.glob("*.bin"))]
    for name in names:
        assert (small.path / name).read_bytes() == (other.path / name).read_bytes()
    pieces = lambda sp: [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    assert pieces(load_tokenizer(small.tokenizer)) == pieces(load_tokenizer(other.tokenizer))


def test_full_size_default_entry(tmp_path_factory):
    cache = tmp_path_factory.mktemp("default-cache")
    corpus = ensure_generated_corpus(cache, 512)
    meta = corpus.meta
    assert corpus.path == cache / entry_name(512, 3_000_000, 150_000, 0)
    assert meta["train_tokens"] >= 2_500_000 and 150_000 <= meta["val_tokens"] < 155_000
    assert sum(read_shard(p).size for p in list_shards(corpus.path, "train")) == meta["train_tokens"]
    assert len(list_shards(corpus.path, "train")) == meta["train_shards"] >= 2
    assert load_tokenizer(corpus.tokenizer).vocab_size() == 512
    assert json.loads((corpus.path / "meta.json").read_text()) == meta
    for key in ("entropy_rate_bpb", "val_floor_bpb", "unigram_bpb", "val_bytes"):
        assert meta[key] > 0
    # the second call reuses the entry
    mtime = (corpus.path / "meta.json").stat().st_mtime_ns
    assert ensure_generated_corpus(cache, 512).meta == meta
    assert (corpus.path / "meta.json").stat().st_mtime_ns == mtime


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("GPT_SWEEP_CACHE", str(tmp_path / "env"))
    assert default_cache_dir(None) == default_cache_dir("") == tmp_path / "env"
    assert default_cache_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("GPT_SWEEP_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir("") == tmp_path / "home" / ".cache" / "gpt-sweep"


def test_loser_of_the_publish_race_keeps_the_winner(tmp_path):
    sizes = dict(train_tokens=1000, val_tokens=1000, seed=5)
    target = tmp_path / "entry"
    first, second = tmp_path / "a", tmp_path / "b"
    for d in (first, second):
        d.mkdir()
        build_corpus(d, 400, sizes["train_tokens"], sizes["val_tokens"], sizes["seed"])
    (second / "meta.json").write_text('{"marker": "second"}')
    assert publish(first, target) is True and not first.exists()
    assert publish(second, target) is False and second.exists()
    assert "marker" not in json.loads((target / "meta.json").read_text())


def test_concurrent_builders_share_one_entry(tmp_path):
    code = ("import sys, json; from trainer.data.generated import ensure_generated_corpus as e; "
            "c = e(sys.argv[1], 400, train_tokens=1000, val_tokens=1000, seed=9); "
            "print(json.dumps([str(c.path), c.meta]))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    assert all(r == results[0] for r in results)
    entries = [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")]
    assert entries == [Path(results[0][0]).name], "one entry, no temporary folders left"


def test_cli_generate(tmp_path, capsys):
    args = ["generate", "--cache-dir", str(tmp_path), "--train-tokens", "1000", "--val-tokens", "1000"]
    assert main(args + ["--vocab-size", "400"]) == 0
    out = capsys.readouterr().out
    entry = tmp_path / entry_name(400, 1000, 1000, 0)
    assert f"data.path={entry} data.tokenizer={entry / 'tokenizer.model'}" in out
    assert json.loads(out[:out.rindex("}") + 1])["val_floor_bpb"] > 0
    for bad in ("100", "4096"):
        assert main(args + ["--vocab-size", bad]) == 2
        assert f"supports tokenizer vocab sizes 320..2048, got {bad}" in capsys.readouterr().err
    assert main(["generate", "--vocab-size", "many"]) == 2
    assert "invalid int value" in capsys.readouterr().err
