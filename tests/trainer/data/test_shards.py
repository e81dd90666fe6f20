import numpy as np
import pytest

from trainer.data.shards import ShardError, list_shards, read_shard, shard_token_count, write_shard


def _header(path):
    return np.fromfile(path, dtype="<i4", count=256)


def test_round_trip_and_layout(tmp_path):
    tokens = np.array([0, 1, 2, 65535, 1024, 7], dtype=np.int64)
    path = write_shard(tmp_path / "x_train_000000.bin", tokens)
    assert path.stat().st_size == 1024 + 2 * tokens.size
    header = _header(path)
    assert (header[0], header[1], header[2]) == (20240520, 1, tokens.size)
    assert not header[3:].any()
    # tokens are little-endian uint16 right after the header
    assert np.fromfile(path, dtype="<u2", offset=1024).tolist() == tokens.tolist()
    got = read_shard(path)
    assert got.dtype == np.uint16 and isinstance(got, np.memmap)
    assert got.tolist() == tokens.tolist()
    assert list(tmp_path.iterdir()) == [path], "no temporary files left behind"


def test_empty_shard(tmp_path):
    path = write_shard(tmp_path / "e_val_000000.bin", np.array([], dtype=np.uint16))
    assert path.stat().st_size == 1024
    assert read_shard(path).size == 0


@pytest.mark.parametrize("bad", [[1, 65536], [-1, 3]])
def test_write_rejects_tokens_outside_uint16(tmp_path, bad):
    path = tmp_path / "x_train_000000.bin"
    with pytest.raises(ShardError, match="uint16") as e:
        write_shard(path, np.array(bad))
    assert str(path) in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_atomically(tmp_path):
    path = write_shard(tmp_path / "x_train_000000.bin", [5, 6, 7])
    write_shard(path, [9])
    assert read_shard(path).tolist() == [9]


def _corrupt(path, header=None, extra=b"", cut=0):
    data = bytearray(path.read_bytes())
    if header:
        h = np.frombuffer(bytes(data[:1024]), dtype="<i4").copy()
        for i, v in header.items():
            h[i] = v
        data[:1024] = h.tobytes()
    data += extra
    if cut:
        data = data[:-cut]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    (dict(cut=2), "does not match the header's 10 tokens"),
    (dict(cut=2 * 10 + 1024 - 100), "truncated header"),
    (dict(extra=b"\0\0"), "does not match"),
    (dict(header={0: 20240521}), "wrong magic number 20240521"),
    (dict(header={1: 2}), "unsupported shard version 2"),
    (dict(header={2: -5}), "negative token count -5"),
    (dict(header={2: 11}), "header's 11 tokens"),
])
def test_every_header_or_size_problem_names_the_file(tmp_path, damage, message):
    path = write_shard(tmp_path / "x_train_000003.bin", np.arange(10))
    _corrupt(path, **damage)
    for reader in (read_shard, shard_token_count):
        with pytest.raises(ShardError) as e:
            reader(path)
        assert str(path) in str(e.value)
        assert message in str(e.value)
        assert e.value.path == path


def test_missing_shard_is_a_shard_error(tmp_path):
    with pytest.raises(ShardError, match="no such shard file"):
        read_shard(tmp_path / "nope_train_000000.bin")


def test_list_shards_sorted_and_filtered(tmp_path):
    for name in ["a_train_000002.bin", "a_train_000000.bin", "b_train_000001.bin", "a_val_000000.bin",
                 "a_train_1.bin", "a_train_000000.bin.tmp", "train_000009.bin"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d_train_000005.bin").mkdir()
    assert [p.name for p in list_shards(tmp_path, "train")] == [
        "a_train_000000.bin", "a_train_000002.bin", "b_train_000001.bin"]
    assert [p.name for p in list_shards(tmp_path, "val")] == ["a_val_000000.bin"]


def test_list_shards_errors_name_folder_and_pattern(tmp_path):
    (tmp_path / "a_val_000000.bin").write_bytes(b"")
    with pytest.raises(ShardError) as e:
        list_shards(tmp_path, "train")
    assert str(tmp_path) in str(e.value) and "*_train_NNNNNN.bin" in str(e.value)
    with pytest.raises(ShardError, match="no such shard folder"):
        list_shards(tmp_path / "missing", "train")
