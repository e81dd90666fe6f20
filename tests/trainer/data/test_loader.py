import numpy as np
import pytest
import torch

from trainer.data import DataError
from trainer.data.loader import TrainLoader, load_val_tokens, val_slices
from trainer.data.shards import ShardError, write_shard

SIZES = (1000, 700, 1300)   # train shards; the stream is 3000 tokens long
TOTAL = sum(SIZES)


@pytest.fixture
def folder(tmp_path):
    # token value = position in the train stream, so every expectation is a position formula
    start = 0
    for i, n in enumerate(SIZES):
        write_shard(tmp_path / f"t_train_{i:06d}.bin", np.arange(start, start + n))
        start += n
    write_shard(tmp_path / "t_val_000000.bin", np.arange(50_000, 50_000 + 300))
    write_shard(tmp_path / "t_val_000001.bin", np.arange(60_000, 60_000 + 250))
    return tmp_path


def _global_micro_batches(folder, world_size, step, **kw):
    loaders = [TrainLoader(folder, r, world_size, **kw) for r in range(world_size)]
    return [mb for loader in loaders for mb in loader.batch(step)]


def test_batches_follow_the_stream_formula(folder):
    B, M, T = 512, 4, 64
    m = B // M
    loader = TrainLoader(folder, 0, 1, batch_tokens=B, seq_len=T, micro_batches=M)
    for step in range(8):  # step 5 wraps around the end of the stream, several cross shard boundaries
        batch = loader.next_batch()
        assert len(batch) == M
        for k, (x, y) in enumerate(batch):
            assert x.shape == y.shape == (m // T, T) and x.dtype == y.dtype == torch.int64
            pos = step * B + k * m + np.arange(m)
            assert x.flatten().tolist() == (pos % TOTAL).tolist()
            assert y.flatten().tolist() == ((pos + 1) % TOTAL).tolist()
    assert loader.step == 8


@pytest.mark.parametrize("world_size", [2, 4])
def test_result_does_not_depend_on_world_size(folder, world_size):
    kw = dict(batch_tokens=512, seq_len=32, micro_batches=8)
    for step in range(8):
        single = _global_micro_batches(folder, 1, step, **kw)
        split = _global_micro_batches(folder, world_size, step, **kw)
        assert len(single) == len(split) == 8
        for (x1, y1), (x2, y2) in zip(single, split):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_each_rank_gets_its_own_micro_batches(folder):
    kw = dict(batch_tokens=512, seq_len=32, micro_batches=8)
    rank1 = TrainLoader(folder, 1, 2, **kw).batch(0)
    assert len(rank1) == 4
    assert rank1[0][0][0, 0].item() == 4 * 64  # rank 1 starts at micro-batch 4 of 64 tokens


def test_bad_loader_arguments(folder):
    with pytest.raises(ValueError, match="do not split over 3 ranks"):
        TrainLoader(folder, 0, 3, batch_tokens=512, seq_len=32, micro_batches=8)
    with pytest.raises(ValueError, match="not a multiple"):
        TrainLoader(folder, 0, 1, batch_tokens=500, seq_len=32, micro_batches=8)
    with pytest.raises(ValueError, match="rank 2"):
        TrainLoader(folder, 2, 2, batch_tokens=512, seq_len=32, micro_batches=8)
    with pytest.raises(ShardError, match="no such shard folder"):
        TrainLoader(folder / "nothing", 0, 1, batch_tokens=512, seq_len=32, micro_batches=8)


def test_corrupt_train_shard_fails_at_construction(folder):
    path = folder / "t_train_000001.bin"
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(ShardError) as e:
        TrainLoader(folder, 0, 1, batch_tokens=512, seq_len=32, micro_batches=8)
    assert str(path) in str(e.value)


def test_val_tokens_concatenated_and_cut(folder):
    both = list(range(50_000, 50_300)) + list(range(60_000, 60_250))
    tokens = load_val_tokens(folder, seq_len=64, limit_tokens=0)
    assert tokens.numel() == 8 * 64 + 1 and tokens.tolist() == both[:513]  # 550 tokens hold 8 sequences
    limited = load_val_tokens(folder, seq_len=64, limit_tokens=200)
    assert limited.tolist() == both[:3 * 64 + 1]
    with pytest.raises(DataError, match="fewer than one sequence"):
        load_val_tokens(folder, seq_len=64, limit_tokens=64)


@pytest.mark.parametrize("num_seqs, world_size", [(10, 3), (2, 4), (8, 8), (7, 1)])
def test_val_slices_cover_every_sequence_once(num_seqs, world_size):
    slices = [val_slices(num_seqs, r, world_size) for r in range(world_size)]
    assert [i for s in slices for i in s] == list(range(num_seqs))
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
