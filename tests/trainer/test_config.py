import subprocess
import sys

import pytest
import yaml

from trainer.config import ConfigError, flatten, load_config, preset_names


def run_trainer(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_precedence_preset_then_file_then_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train: {iterations: 77, warmdown_iters: 7}\nfp8: {x_s: 0.5}\n")
    cfg = load_config("tiny", cfg_file, ["train.iterations=88"])
    assert cfg.train.iterations == 88          # override beats file
    assert cfg.train.warmdown_iters == 7       # file beats preset
    assert cfg.fp8.x_s == 0.5
    assert cfg.model.model_dim == 64           # preset beats base
    assert cfg.model.rope_base == 10000.0      # base default


def test_every_preset_is_valid_and_uses_only_known_keys():
    base_keys = set(flatten(load_config()))
    for name in preset_names():
        cfg = load_config(name, world_size=2 if name == "tiny" else 8)
        assert set(flatten(cfg)) == base_keys
    golf = load_config("golf")
    assert (golf.model.vocab_size, golf.model.num_layers, golf.model.model_dim) == (1024, 9, 512)
    assert golf.export.max_bytes == 16_000_000
    speedrun = load_config("speedrun")
    assert speedrun.model.vocab_size == 50304 and speedrun.fp8.enabled


@pytest.mark.parametrize("override, key", [
    ("nope.key=1", "nope.key"),
    ("train.iterations=ten", "train.iterations"),
    ("fp8.enabled=3", "fp8.enabled"),
    ("fp8.grad_s=0", "fp8.grad_s"),
    ("fp8.x_s=-1", "fp8.x_s"),
    ("train.untie_frac=1.2", "train.untie_frac"),
    ("train.untie_frac=-0.1", "train.untie_frac"),
    ("model.num_heads=5", "model.num_heads"),
    ("model.num_kv_heads=3", "model.num_kv_heads"),
    ("train.batch_tokens=1000", "train.batch_tokens"),
    ("device=tpu", "device"),
    ("export.embed=int4", "export.embed"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", overrides=[override])
    assert e.value.key == key
    assert key in str(e.value)


def test_batch_must_split_over_ranks():
    load_config("tiny", world_size=2)
    with pytest.raises(ConfigError) as e:
        load_config("tiny", world_size=3)
    assert e.value.key == "train.micro_batches"


def test_print_config_round_trips(tmp_path):
    out = run_trainer("--preset", "tiny", "--print-config", "fp8.w_s=0.01", "seed=7")
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["fp8"]["w_s"] == 0.01 and printed["seed"] == 7
    again = tmp_path / "printed.yaml"
    again.write_text(out.stdout)
    assert load_config(None, again) == load_config("tiny", overrides=["fp8.w_s=0.01", "seed=7"])


def test_unknown_key_exits_2_with_its_name_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    out = run_trainer("--preset", "tiny", "--run-dir", str(run_dir), "train.bogus=1")
    assert out.returncode == 2
    assert "train.bogus" in out.stderr
    assert not (run_dir / "train.log").exists() or "step:" not in (run_dir / "train.log").read_text()
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"error"' in lines[0] and "train.bogus" in lines[0]


def test_a_misspelt_key_is_told_the_closest_known_one():
    with pytest.raises(ConfigError, match=r"^train\.warmdown_iter: unknown config key; did you mean "
                                          r"train\.warmdown_iters\?$"):
        load_config("tiny", overrides=["train.warmdown_iter=10"])
    # nothing close: no guess (a shared section alone is not close)
    with pytest.raises(ConfigError, match=r"^train\.bogus_thing: unknown config key$"):
        load_config("tiny", overrides=["train.bogus_thing=1"])


def test_missing_config_file_exits_2(tmp_path):
    out = run_trainer("--config", str(tmp_path / "absent.yaml"), "--print-config")
    assert out.returncode == 2 and "absent.yaml" in out.stderr
