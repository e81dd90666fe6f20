"""The trainer end to end: real processes (one, and two under torchrun with gloo) on the generated corpus."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import distributed, events, protocol
from trainer.config import load_config
from trainer.data.generated import ensure_generated_corpus
from trainer.data.shards import list_shards, write_shard
from trainer.train import Trainer

pytestmark = pytest.mark.slow  # starts Ray or torchrun processes

SHORT = ["train.iterations=40", "train.val_every=20", "train.log_every=10"]


def launch(run_dir: Path, *overrides: str, nproc: int = 1, preset: str = "tiny") -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "trainer"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "trainer"]
    return subprocess.run([*cmd, "--preset", preset, "--run-dir", str(run_dir), *overrides],
                          capture_output=True, text=True, timeout=600)


def read_events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / protocol.EVENTS_FILE).read_text().splitlines()]


def only(evs: list[dict], name: str) -> dict:
    (ev,) = [e for e in evs if e["event"] == name]
    return ev


@pytest.fixture(scope="module")
def full_tiny_run(tmp_path_factory):
    """The tiny preset as shipped, once for the module."""
    run_dir = tmp_path_factory.mktemp("tiny") / "run"
    out = launch(run_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


def test_tiny_preset_learns_below_unigram_entropy(full_tiny_run, corpus_cache):
    final = only(read_events(full_tiny_run), "final")
    meta = ensure_generated_corpus(corpus_cache, 512).meta
    print(f"\nfinal val_bpb {final['val_bpb']:.4f}; unigram {meta['unigram_bpb']:.4f}; "
          f"true floor {meta['val_floor_bpb']:.4f}; gap to floor {final['val_bpb'] - meta['val_floor_bpb']:.4f}")
    assert final["status"] == "ok"
    assert final["val_bpb"] < meta["unigram_bpb"]
    # A model cannot beat the generator's own likelihood (small slack: the preset scores a val prefix).
    assert final["val_bpb"] > meta["val_floor_bpb"] - 0.02


def test_run_directory_follows_the_protocol(full_tiny_run):
    evs = read_events(full_tiny_run)
    assert evs[0]["event"] == "start" and evs[-1]["event"] == "final"
    assert all({"event", "time"} <= set(e) for e in evs)
    start = evs[0]
    assert start["world_size"] == 1 and start["config"]["model"]["model_dim"] == 64
    assert {"device", "torch_version", "git_sha"} <= set(start)
    trains = [e for e in evs if e["event"] == "train"]
    assert [e["step"] for e in trains][-1] == 150
    assert all({"step", "total_steps", "train_loss", "train_time_ms", "step_avg_ms", "tokens"} <= set(e)
               for e in trains)
    assert trains[-1]["tokens"] == 150 * 4096
    vals = [e for e in evs if e["event"] == "val"]
    assert [e["step"] for e in vals] == [50, 100, 150]
    assert vals[0]["val_loss"] > vals[-1]["val_loss"]
    final = evs[-1]
    assert final["val_loss"] == vals[-1]["val_loss"] and final["peak_mem_mib"] > 0
    log = (full_tiny_run / protocol.LOG_FILE).read_text()
    assert f"step:150/150 val_loss:{final['val_loss']:.4f} val_bpb:{final['val_bpb']:.4f} train_time:" in log
    assert "step:10/150 train_loss:" in log
    assert load_config(None, full_tiny_run / protocol.CONFIG_FILE) == load_config("tiny")
    assert set(torch.load(full_tiny_run / protocol.MODEL_FILE)) >= {"lm_head.weight", "skip_weights"}


def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    out1 = launch(one, *SHORT)
    out2 = launch(two, *SHORT, nproc=2)
    assert out1.returncode == 0, out1.stderr[-3000:]
    assert out2.returncode == 0, out2.stderr[-3000:]
    f1, f2 = only(read_events(one), "final"), only(read_events(two), "final")
    assert only(read_events(two), "start")["world_size"] == 2
    print(f"\n1 process val_loss {f1['val_loss']:.6f}, 2 processes {f2['val_loss']:.6f}")
    assert f1["step"] == f2["step"] == 40
    assert abs(f1["val_loss"] - f2["val_loss"]) < 5e-4
    assert abs(f1["val_bpb"] - f2["val_bpb"]) < 2e-4


def test_untie_event_comes_at_the_right_step(tmp_path):
    run_dir = tmp_path / "run"
    out = launch(run_dir, "train.iterations=20", "train.untie_frac=0.5", "train.val_every=0")
    assert out.returncode == 0, out.stderr[-3000:]
    evs = read_events(run_dir)
    assert only(evs, "untie")["step"] == 10
    state = torch.load(run_dir / protocol.MODEL_FILE)
    assert not torch.equal(state["tok_emb.weight"], state["lm_head.weight"])


def test_untie_copies_adam_state_then_trains_apart(tmp_path):
    cfg = load_config("tiny", overrides=["train.iterations=12", "train.untie_frac=0.5"])
    trainer = Trainer(cfg, distributed.setup("cpu"), events.RunLog(None, active=False))
    for _ in range(6):
        trainer.train_step(1.0, 0.9)
    head = trainer.model.lm_head.weight
    head_state = {k: v.clone() for k, v in trainer.adam.full_state(head).items()}
    trainer.untie()
    embed = trainer.model.tok_emb.weight
    embed_state = trainer.adam.full_state(embed)
    assert set(embed_state) >= {"step", "exp_avg", "exp_avg_sq"}
    for key, value in head_state.items():
        assert torch.equal(embed_state[key], value), key
    assert torch.equal(embed, head)
    for _ in range(3):
        trainer.train_step(1.0, 0.9)
    assert not torch.equal(trainer.model.tok_emb.weight, trainer.model.lm_head.weight)
    assert trainer.adam.full_state(embed)["step"].item() == head_state["step"].item() + 3


def test_untie_frac_zero_unties_before_the_first_step(tmp_path):
    run_dir = tmp_path / "run"
    out = launch(run_dir, "train.iterations=3", "train.untie_frac=0.0", "train.val_every=0",
                 "train.save_model=false")
    assert out.returncode == 0, out.stderr[-3000:]
    assert only(read_events(run_dir), "untie")["step"] == 0
    # the run is complete without its weights file when saving is switched off
    assert only(read_events(run_dir), "final")["status"] == "ok"
    assert not (run_dir / protocol.MODEL_FILE).exists()


def test_non_finite_loss_is_a_diverged_result_not_a_crash(tmp_path):
    run_dir = tmp_path / "run"
    out = launch(run_dir, "train.iterations=30", "train.val_every=0", "train.log_every=1",
                 "optim.scalar_lr=1e30", "optim.tied_embed_lr=1e30", "optim.matrix_lr=1e30")
    assert out.returncode == 0, out.stderr[-3000:]
    final = read_events(run_dir)[-1]
    assert final["event"] == "final" and final["status"] == "diverged"
    assert final["step"] < 30 and final["val_loss"] is None


def test_wallclock_cap_stops_early_with_that_status(tmp_path):
    run_dir = tmp_path / "run"
    out = launch(run_dir, "train.iterations=100000", "train.max_wallclock_seconds=2", "train.val_every=0")
    assert out.returncode == 0, out.stderr[-3000:]
    final = read_events(run_dir)[-1]
    assert final["status"] == "wallclock_cap" and final["step"] < 100000
    assert final["train_time_ms"] >= 2000
    assert "stopping_early: wallclock_cap" in (run_dir / protocol.LOG_FILE).read_text()


def _copy_corpus(corpus_cache: str, dest: Path) -> Path:
    src = ensure_generated_corpus(corpus_cache, 512).path
    dest.mkdir()
    for split in ("train", "val"):
        for shard in list_shards(src, split):
            (dest / shard.name).write_bytes(shard.read_bytes())
    return dest


@pytest.mark.parametrize("damage", ["truncated", "magic"])
def test_bad_shard_exits_2_naming_the_file(tmp_path, corpus_cache, damage):
    data = _copy_corpus(corpus_cache, tmp_path / "data")
    victim = list_shards(data, "train")[-1]
    raw = bytearray(victim.read_bytes())
    if damage == "truncated":
        victim.write_bytes(bytes(raw[:-1000]))
    else:
        raw[0:4] = np.int32(12345).tobytes()
        victim.write_bytes(bytes(raw))
    run_dir = tmp_path / "run"
    out = launch(run_dir, f"data.path={data}", "train.iterations=5")
    assert out.returncode == 2
    assert victim.name in out.stderr
    evs = read_events(run_dir)
    assert evs[-1]["event"] == "error" and victim.name in evs[-1]["message"]
    assert not [e for e in evs if e["event"] == "train"]


def test_tokens_outside_the_vocabulary_exit_2(tmp_path):
    data = tmp_path / "data"
    write_shard(data / "x_train_000000.bin", np.arange(2000, dtype=np.uint16) % 700)
    write_shard(data / "x_val_000000.bin", np.arange(2000, dtype=np.uint16) % 700)
    out = launch(tmp_path / "run", f"data.path={data}", "train.iterations=5", "train.val_tokens=0")
    assert out.returncode == 2 and "model.vocab_size" in out.stderr
