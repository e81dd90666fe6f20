import json
import math

import numpy as np
import pytest

from trainer.data import DataError
from trainer.data.cli import main
from trainer.data.corpus import WordChain
from trainer.data.shards import list_shards, read_shard
from trainer.data.tokenize_files import is_val_doc, tokenize_files
from trainer.data.tokenizer import BOS_ID, load_tokenizer


@pytest.fixture(scope="module")
def documents():
    chain = WordChain.build(seed=4)
    stream = chain.documents(np.random.default_rng(1))
    docs = [chain.render(next(stream)) for _ in range(120)]
    docs[5] += "\nA second line, caf\u00e9 \u2713 42."
    return docs


@pytest.fixture
def inputs(tmp_path, documents):
    """Documents 0-1 as .txt files (plus an empty one), the rest in two .jsonl files."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text(documents[0] + "\n")
    (src / "empty.txt").write_text("  \n")
    (src / "b.txt").write_text(documents[1])
    lines = [json.dumps({"text": d, "id": i}) for i, d in enumerate(documents[2:60])]
    (src / "c.jsonl").write_text("\n".join(lines[:10] + [""] + lines[10:]) + "\n")
    (src / "d.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents[60:]))
    return [src / "a.txt", src / "empty.txt", src / "b.txt", src / "c.jsonl", src / "d.jsonl"]


def _shard_docs(folder, split):
    tokens = np.concatenate([read_shard(p) for p in list_shards(folder, split)]).tolist()
    assert tokens[0] == BOS_ID
    docs, current = [], []
    for t in tokens[1:] + [BOS_ID]:
        if t == BOS_ID:
            docs.append(current)
            current = []
        else:
            current.append(t)
    return docs, len(tokens)


def test_val_split_is_spread_and_exact():
    for n, f in [(120, 0.1), (7, 0.01), (50, 0.25), (10, 0.0)]:
        val = [i for i in range(n) if is_val_doc(i, f)]
        assert len(val) == math.ceil(n * f)
        if f:
            assert val[0] == 0 and max(np.diff(val), default=1) <= math.ceil(1 / f)


def test_tokenize_trains_a_tokenizer_and_writes_shards(tmp_path, inputs, documents):
    out = tmp_path / "out"
    summary = tokenize_files(inputs, out, vocab_size=400, val_fraction=0.1, prefix="mine", shard_tokens=3000)
    sp = load_tokenizer(out / "tokenizer.model")
    assert sp.vocab_size() == 400 and summary["tokenizer"] == str(out / "tokenizer.model")

    val_idx = [i for i in range(len(documents)) if is_val_doc(i, 0.1)]
    assert len(val_idx) == 12
    expected = {"val": [documents[i] for i in val_idx],
                "train": [d for i, d in enumerate(documents) if i not in val_idx]}
    for split in ("train", "val"):
        docs, n_tokens = _shard_docs(out, split)
        # nmt_nfkc turns the newline inside document 5 into a space
        assert [sp.decode(d) for d in docs] == [d.replace("\n", " ") for d in expected[split]]
        assert summary[f"{split}_docs"] == len(docs) and summary[f"{split}_tokens"] == n_tokens
        shards = list_shards(out, split)
        assert summary[f"{split}_shards"] == len(shards)
        assert all(p.name.startswith(f"mine_{split}_") for p in shards)
        assert all(read_shard(p).size == 3000 for p in shards[:-1]) and 0 < read_shard(shards[-1]).size <= 3000
    assert summary["train_shards"] > 1
    assert summary["documents"] == len(documents)
    assert summary["val_bytes"] == sum(len(d.replace("\n", " ").encode()) for d in expected["val"])
    assert json.loads((out / "meta.json").read_text()) == summary


def test_tokenize_with_a_given_tokenizer(tmp_path, inputs, documents):
    first = tokenize_files(inputs, tmp_path / "first", vocab_size=400, val_fraction=0.05)
    out = tmp_path / "second"
    summary = tokenize_files(inputs, out, tokenizer=first["tokenizer"], val_fraction=0.05)
    assert not (out / "tokenizer.model").exists() and summary["tokenizer"] == first["tokenizer"]
    for split in ("train", "val"):
        assert [p.name for p in list_shards(out, split)] == [p.name for p in list_shards(tmp_path / "first", split)]
        for a, b in zip(list_shards(out, split), list_shards(tmp_path / "first", split)):
            assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("content, message", [
    ('{"text": "fine"}\n{"title": "no text"}\n', "bad.jsonl:2: no \"text\" string field"),
    ('{"text": "fine"}\n\n{"text": 3}\n', "bad.jsonl:3: no \"text\" string field"),
    ('{"text": "fine"}\n{"text": \n', "bad.jsonl:2: not valid JSON"),
])
def test_bad_jsonl_line_is_named_before_any_work(tmp_path, inputs, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        tokenize_files(inputs + [bad], out, vocab_size=400)
    assert not out.exists()


def test_bad_arguments(tmp_path, inputs):
    out = tmp_path / "out"
    with pytest.raises(DataError, match="missing.txt: no such input file"):
        tokenize_files(inputs + [tmp_path / "missing.txt"], out)
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(DataError, match="x.csv: unsupported input type"):
        tokenize_files([tmp_path / "x.csv"], out)
    with pytest.raises(DataError, match="val_fraction"):
        tokenize_files(inputs, out, val_fraction=1.0)
    with pytest.raises(DataError, match="no such tokenizer model file"):
        tokenize_files(inputs, out, tokenizer=tmp_path / "none.model")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(DataError, match="latin1.txt: not UTF-8"):
        tokenize_files([tmp_path / "latin1.txt"], out)
    with pytest.raises(DataError, match="leave none for training"):
        tokenize_files(inputs[:1], out, val_fraction=0.5)
    assert not out.exists()
    out.mkdir()
    (out / "data_train_000000.bin").write_bytes(b"")
    with pytest.raises(DataError, match="already holds a data set"):
        tokenize_files(inputs, out)


def test_cli_tokenize(tmp_path, inputs, capsys):
    out = tmp_path / "out"
    assert main(["tokenize", *map(str, inputs), "--out", str(out), "--vocab-size", "400"]) == 0
    printed = capsys.readouterr().out
    assert f"data.path={out} data.tokenizer={out / 'tokenizer.model'}" in printed
    assert list_shards(out, "train") and list_shards(out, "val")
    assert main(["tokenize", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o2")]) == 2
    assert "nope.jsonl: no such input file" in capsys.readouterr().err
    assert main(["tokenize", str(inputs[0])]) == 2
    assert "--out" in capsys.readouterr().err
