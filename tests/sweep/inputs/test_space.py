"""Search space files: the shipped spaces, and every kind of bad file rejected with its file and key named."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from paths import LOGS, SPACES

from sweep.cli import main as sweep_main
from sweep.errors import InputError
from sweep.inputs.overrides import format_override, parse_set
from sweep.inputs.space import check_with_trainer, load_space, parse_space
from sweep.runlog.logparse import parse_log
from trainer.config import load_config

GOOD = {
    "name": "demo",
    "metric": "val_loss",
    "mode": "min",
    "preset": "tiny",
    "params": {
        "fp8.x_s": {"type": "float", "low": 0.02, "high": 2.0, "log": True},
        "train.warmdown_iters": {"type": "int", "low": 10, "high": 100, "step": 10},
        "export.embed": {"type": "categorical", "choices": ["fp16", "int8"]},
    },
    "fixed": {"fp8.enabled": True},
    "points_to_evaluate": [{"fp8.x_s": 0.2232, "train.warmdown_iters": 50, "export.embed": "fp16"}],
}


def write(tmp_path: Path, data: dict, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def variant(**changes) -> dict:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("/")
        for part in parents:
            node = node[part]
        if value is None:
            del node[leaf]
        else:
            node[leaf] = value
    return data


@pytest.mark.parametrize("name", ["fp8_scales", "fp8_schedule", "warmdown", "untie", "record"])
def test_shipped_spaces_pass_every_check_with_their_preset(name):
    space = load_space(SPACES / f"{name}.yaml")
    assert space.name == name
    check_with_trainer(space, space.preset)


def test_the_frontier_golf_space_starts_at_the_record_and_is_scored_as_the_record_is():
    space = load_space(SPACES / "golf_frontier.yaml").with_trainer()
    assert space.trainer.env_mode and space.trainer.command.endswith(" train_gpt.py")
    assert list(space.params) == ["WARMDOWN_FRAC", "MATRIX_LR", "MIN_LR"]
    # The record's log (an excerpt of its seed-42 log) says what it ran with and what it was scored by.
    record = parse_log((LOGS / "golf_quantized_ttt_phased.txt").read_text())
    first = space.points_to_evaluate[0]
    assert first == {key: float(record.hyperparameters[key.lower()]) for key in space.params}
    assert space.objective.evaluation == (record.score_label, "val_bpb")
    assert all(p.contains(first[key]) for key, p in space.params.items())


def test_fp8_space_starts_at_the_pr175_scales_and_runs_on_the_tiny_preset():
    space = load_space(SPACES / "fp8_scales.yaml")
    assert space.preset == "speedrun"
    assert list(space.params) == ["fp8.x_s", "fp8.w_s", "fp8.grad_s"]
    first = space.points_to_evaluate[0]
    assert first["fp8.x_s"] == pytest.approx(100 / 448)
    assert first["fp8.w_s"] == pytest.approx(1.5 / 448)
    assert first["fp8.grad_s"] == pytest.approx(0.75 / 448)
    assert all(p.log for p in space.params.values())
    check_with_trainer(space, "tiny", world_size=1)


def test_fp8_schedule_space_starts_with_the_constant_pr175_scales():
    space = load_space(SPACES / "fp8_schedule.yaml")
    assert set(space.params) == {"fp8.x_s_end", "fp8.w_s_end", "fp8.grad_s_end"}
    constant = space.points_to_evaluate[0]
    for name, value in (("x_s", 100 / 448), ("w_s", 1.5 / 448), ("grad_s", 0.75 / 448)):
        assert space.fixed[f"fp8.{name}"] == pytest.approx(value)
        assert constant[f"fp8.{name}_end"] == space.fixed[f"fp8.{name}"]
        param = space.params[f"fp8.{name}_end"]
        assert param.log and param.low < value < param.high
    check_with_trainer(space, "tiny", world_size=1)


def test_record_space_sweeps_all_five_dimensions_towards_the_speedrun_target():
    space = load_space(SPACES / "record.yaml")
    assert set(space.params) == {"fp8.x_s", "fp8.w_s", "fp8.grad_s", "train.warmdown_iters", "train.untie_frac"}
    assert space.metric == "time_to_target" and space.objective.target == 3.28


def test_a_good_space_becomes_optuna_distributions(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    check_with_trainer(space, "tiny")
    dists = space.distributions()
    assert dists["fp8.x_s"].log and dists["fp8.x_s"].low == 0.02
    assert dists["train.warmdown_iters"].step == 10
    assert list(dists["export.embed"].choices) == ["fp16", "int8"]


@pytest.mark.parametrize("changes, where, words", [
    ({"params/fp8.bogus": {"type": "float", "low": 0.1, "high": 1.0}, "points_to_evaluate": None},
     "params.fp8.bogus", "unknown config key"),
    ({"fixed/model.bogus": 3}, "fixed.model.bogus", "unknown config key"),
    ({"params/fp8.x_s/low": 3.0}, "params.fp8.x_s", "bad bounds"),
    ({"params/fp8.x_s/high": "big"}, "params.fp8.x_s.high", "finite number"),
    ({"params/fp8.x_s/low": 0.0}, "params.fp8.x_s.low", "log range must stay above 0"),
    ({"params/fp8.x_s/low": -1.0}, "params.fp8.x_s.low", "log range must stay above 0"),
    ({"metric": "accuracy"}, "metric", "unknown metric"),
    ({"metric": "eval.quantized_ttt_phased"}, "metric", "is not eval.<label>.val_bpb or eval.<label>.val_loss"),
    ({"metric": "eval..val_bpb"}, "metric", "is not eval.<label>.val_bpb"),
    ({"metric": "eval.quantized_ttt_phased.val_acc"}, "metric", "is not eval.<label>.val_bpb"),
    ({"metric": "eval.Quantized_TTT.val_bpb"}, "metric", "write eval.quantized_ttt.val_bpb"),
    ({"metric": "eval.diagnostic quantized.val_loss"}, "metric", "write eval.diagnostic_quantized.val_loss"),
    ({"metric": "eval.final_int6_sliding_window_exact.val_bpb"}, "metric",
     "_exact copy folded in; write eval.final_int6_sliding_window.val_bpb"),
    # The built-in trainer evaluates once after training: its artifact's round trip.
    ({"metric": "eval.final_int6_zstd_roundtrip.val_bpb"}, "metric",
     "eval.final_int6_zstd_roundtrip.val_bpb needs export.enabled: true"),
    ({"metric": "eval.quantized_ttt_phased.val_bpb", "fixed/export.enabled": True}, "metric",
     "prints one evaluation after training, final_int6_zstd_roundtrip: eval.quantized_ttt_phased never comes"),
    ({"mode": "lowest"}, "mode", "min or max"),
    ({"preset": "huge"}, "preset", "unknown preset"),
    ({"colour": "blue"}, "colour", "unknown field"),
    ({"params/fp8.x_s/type": "normal"}, "params.fp8.x_s.type", "must be one of"),
    ({"params/fp8.x_s/lo": 1}, "params.fp8.x_s.lo", "unknown field"),
    ({"params/train.warmdown_iters/step": 7}, "params.train.warmdown_iters.step", "not a multiple"),
    ({"params/export.embed/choices": []}, "params.export.embed.choices", "non-empty list"),
    ({"fixed/fp8.x_s": 0.5}, "fixed.fp8.x_s", "also a swept parameter"),
    ({"points_to_evaluate": [{"fp8.x_s": 5.0, "train.warmdown_iters": 50, "export.embed": "fp16"}]},
     "points_to_evaluate[0].fp8.x_s", "outside"),
    ({"points_to_evaluate": [{"fp8.x_s": 0.5}]}, "points_to_evaluate[0]", "no value for"),
    ({"metric": "time_to_target"}, "target", "needs a target"),
    ({"target": 3.28}, "target", "only used with metric time_to_target"),
    ({"params": {}}, "params", "at least one parameter"),
])
def test_bad_space_is_rejected_naming_file_and_key(tmp_path, changes, where, words):
    path = write(tmp_path, variant(**changes))
    with pytest.raises(InputError) as err:
        check_with_trainer(load_space(path), "tiny")
    assert str(path) in str(err.value)
    assert where in str(err.value)
    assert words in str(err.value)


def test_a_value_the_trainer_would_refuse_at_launch_is_refused_up_front(tmp_path):
    # untie_frac is a fraction: the trainer refuses 1.5, so the range's upper end is refused here.
    path = write(tmp_path, variant(**{"params/train.untie_frac": {"type": "float", "low": 0.5, "high": 1.5},
                                      "points_to_evaluate": None}))
    with pytest.raises(InputError) as err:
        check_with_trainer(load_space(path), "tiny")
    assert "params.train.untie_frac = 1.5" in str(err.value)
    assert "train.untie_frac" in err.value.message and "[0, 1]" in err.value.message


def test_a_value_refused_inside_a_small_int_range_is_found(tmp_path):
    # The tiny preset's width is 64 with 2 KV heads: 2 and 4 heads pass, 3 does not, though both ends do not
    # tell (8 passes too).
    path = write(tmp_path, variant(**{"params/model.num_heads": {"type": "int", "low": 2, "high": 8},
                                      "points_to_evaluate": None}))
    with pytest.raises(InputError) as err:
        check_with_trainer(load_space(path), "tiny")
    assert "params.model.num_heads = 3" in str(err.value)


def test_probe_values_cover_small_int_ranges_and_spread_over_large_ones():
    def probes(**spec):
        return parse_space(yaml.safe_dump({"name": "p", "metric": "val_loss", "preset": "tiny",
                                           "params": {"k": spec}}), "p.yaml").params["k"].probes()

    assert probes(type="int", low=2, high=8) == [2, 3, 4, 5, 6, 7, 8]
    assert probes(type="int", low=10, high=100, step=10) == list(range(10, 101, 10))
    wide = probes(type="int", low=0, high=10_000, step=2)
    assert wide[0] == 0 and wide[-1] == 10_000 and 60 <= len(wide) <= 66
    assert all(v % 2 == 0 for v in wide) and len(set(wide)) == len(wide)
    logged = probes(type="int", low=1, high=100_000, log=True)
    assert logged[0] == 1 and logged[-1] == 100_000 and sum(v < 100 for v in logged) > len(logged) / 3
    assert probes(type="float", low=0.1, high=2.0) == [0.1, 2.0]
    assert probes(type="categorical", choices=["a", "b"]) == ["a", "b"]


def test_a_float_range_on_an_integer_key_is_refused(tmp_path):
    path = write(tmp_path, variant(**{"params/train.warmdown_iters": {"type": "float", "low": 10.5, "high": 60.0}}))
    with pytest.raises(InputError) as err:
        check_with_trainer(load_space(path), "tiny")
    assert "train.warmdown_iters" in str(err.value) and "integer" in str(err.value)


def test_missing_and_unparsable_files_are_named(tmp_path):
    with pytest.raises(InputError, match="absent.yaml: no such file"):
        load_space(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML") as err:
        load_space(broken)
    assert str(broken) in str(err.value)


def test_roundtrip_metric_needs_the_export(tmp_path):
    path = write(tmp_path, variant(metric="roundtrip_val_bpb"))
    with pytest.raises(InputError, match="export.enabled"):
        check_with_trainer(load_space(path), "tiny")
    check_with_trainer(load_space(path).with_fixed({"export.enabled": True}), "tiny")


@pytest.mark.parametrize("scheme, label", [("int6_zstd", "final_int6_zstd_roundtrip"),
                                           ("int8_zlib", "final_int8_zlib_roundtrip")])
def test_the_built_in_trainers_evaluation_can_be_named(tmp_path, scheme, label):
    space = load_space(write(tmp_path, variant(**{"metric": f"eval.{label}.val_loss", "fixed/export.enabled": True,
                                                  "fixed/export.scheme": scheme})))
    assert space.objective.evaluation == (label, "val_loss") and space.objective.from_export
    check_with_trainer(space, "tiny")


def test_with_fixed_refuses_to_fix_a_swept_key(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    with pytest.raises(InputError, match="swept parameter"):
        space.with_fixed({"fp8.x_s": 0.1})
    assert space.with_fixed({"seed": 7}).fixed == {"fp8.enabled": True, "seed": 7}


@pytest.mark.parametrize("key, value", [
    ("fp8.w_s", 1e-05), ("fp8.x_s", 2.0 ** -9), ("fp8.grad_s", 1.5e-300), ("fp8.x_s", 1e30),
    ("train.iterations", 30), ("fp8.enabled", True), ("fp8.enabled", False), ("data.path", "1"),
    ("data.path", "true"), ("data.path", ""), ("data.path", "/data/fineweb10B_sp1024"),
])
def test_overrides_read_back_as_the_same_value(key, value):
    text = format_override(key, value)
    assert text.startswith(f"{key}=")
    read = load_config("tiny", overrides=[text]).get_key(key)
    assert read == value and type(read) is type(value)


def test_a_set_key_is_named_as_the_user_wrote_it_with_the_closest_known_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert sweep_main(["run", "--set", "train.warmdown_iter=10"]) == 2
    printed = capsys.readouterr().err.splitlines()
    # what it checks comes first, before the slow imports and checks; then the error, naming the --set
    assert printed[0].startswith("sweep run: checking the search space fp8_scales, ")
    assert printed[1] == ("sweep run: error: --set train.warmdown_iter: unknown config key; "
                          "did you mean train.warmdown_iters?")
    assert list(tmp_path.iterdir()) == []
    # a value the trainer refuses is named by its --set too; a file's own key by the file
    space = load_space(write(tmp_path, GOOD)).with_fixed({"train.iterations": 0})
    with pytest.raises(InputError) as err:
        check_with_trainer(space, "tiny")
    assert err.value.where == "--set train.iterations" and "must be at least 1" in err.value.message
    space = load_space(write(tmp_path, variant(**{"fixed/train.warmdown_itr": 5})))
    with pytest.raises(InputError) as err:
        check_with_trainer(space, "tiny")
    assert str(err.value) == (f"{tmp_path / 'space.yaml'}: fixed.train.warmdown_itr: unknown config key; "
                              f"did you mean train.warmdown_iters?")


def test_set_values_are_read_as_yaml_and_checked():
    assert parse_set("train.iterations=30") == ("train.iterations", 30)
    assert parse_set("fp8.enabled=false") == ("fp8.enabled", False)
    with pytest.raises(InputError, match="key=value"):
        parse_set("train.iterations")
    with pytest.raises(InputError, match="dotted config key"):
        parse_set("not a key=3")


def test_parse_space_names_its_source():
    with pytest.raises(InputError, match="inline: metric"):
        parse_space(yaml.safe_dump(variant(metric="loss")), "inline")


SOURCE_SPACE = {"name": "src", "metric": "val_loss", "trainer": {"command": "python train_gpt.py", "params": "source"},
                "params": {"CastedLinearT.grad_s@1225": {"type": "float", "low": 1e-4, "high": 0.01,
                                                         "expr": "grad_scale * {}"}},
                "seed": "Hyperparameters.seed"}


def test_a_source_space_takes_addresses_templates_and_a_seed_site():
    space = parse_space(yaml.safe_dump(SOURCE_SPACE), "src.yaml").with_trainer()
    assert space.trainer.source_mode and space.trainer.seed_key == "Hyperparameters.seed"
    assert space.trainer.exprs == {"CastedLinearT.grad_s@1225": "grad_scale * {}"}
    assert space.with_fixed({"LR_FLOOR@12": 0.5}).fixed == {"LR_FLOOR@12": 0.5}
    assert parse_set("Hyperparameters.cooldown_frac@1329=0.5", space.trainer.check_key) == (
        "Hyperparameters.cooldown_frac@1329", 0.5)


@pytest.mark.parametrize("change, flags, message", [
    ({"seed": "Hyperparameters.seed"}, {"params": "env"}, "src.yaml: seed: names the seed's site in the script"),
    ({"params": {"lr@3": {"type": "float", "low": 0.1, "high": 1.0}}, "seed": None}, {"params": "args"},
     "params: 'lr@3' is not a dotted config key"),
    ({"params": {"fp8.x_s": {"type": "float", "low": 0.1, "high": 1.0, "expr": "{}"}}, "seed": None},
     {"params": "args"}, "src.yaml: params.fp8.x_s.expr: a template is for source mode"),
    ({"seed": "CastedLinearT.grad_s@1225"}, {}, "src.yaml: seed: CastedLinearT.grad_s@1225 is also in params"),
    ({"params": {"lr@0": {"type": "float", "low": 0.1, "high": 1.0}}}, {}, "'lr@0' is not a site address"),
    ({"trainer": {"params": "source"}}, {}, "source mode writes the keys into the script another program runs"),
])
def test_source_mode_keys_and_fields_are_checked_for_the_mode(change, flags, message):
    data = {**SOURCE_SPACE, **change}
    with pytest.raises(InputError, match=re.escape(message)):
        parse_space(yaml.safe_dump(data), "src.yaml").with_trainer(params=flags.get("params"))
