"""What a trial runs, without Ray: the trainer block and its flags, the script a command runs, the
command line and environment of env and args mode."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from paths import SPACES, SUPPORT

from sweep.cli import parser
from sweep.commands.run import build_plan
from sweep.errors import InputError
from sweep.inputs.objective import Objective
from sweep.inputs.overrides import format_env_value
from sweep.inputs.script_keys import check_script_keys
from sweep.inputs.space import load_space
from sweep.inputs.trainer_spec import TrainerSpec, script_of
from sweep.trial.command import RUN_DIR_ENV, TrialSettings, build_command, trial_env, trial_params, trial_variables
from sweep.trial.loopback_torchrun import loopback

STANDIN = SUPPORT / "golf_standin.py"


@pytest.mark.parametrize("command", [
    "python train_gpt.py",
    f"{sys.executable} -u -X dev -W ignore train_gpt.py --flag",
    "python3 -m torch.distributed.run --standalone --nproc_per_node=8 train_gpt.py",
    "torchrun --standalone --nproc_per_node 8 --tee 3 train_gpt.py",
    "/usr/local/bin/torchrun --nnodes=1 --no-python ./train_gpt.py",
    "./train_gpt.py",
])
def test_the_script_a_command_runs_is_found_from_the_trials_folder(tmp_path, command):
    (tmp_path / "train_gpt.py").write_text("import os\n")
    assert script_of(command, tmp_path, "--trainer-cmd") == tmp_path / "train_gpt.py"


@pytest.mark.parametrize("command", ["python -m trainer --preset tiny", "bash run.sh", "python -c 'print(1)'",
                                     "torchrun --standalone -m trainer"])
def test_a_command_that_runs_no_python_file_has_no_script(tmp_path, command):
    assert script_of(command, tmp_path, "--trainer-cmd") is None


def test_a_missing_script_or_bad_torchrun_arguments_are_input_errors(tmp_path):
    with pytest.raises(InputError, match=r"runs .*/train_gpt\.py, which does not exist \(trials run in"):
        script_of("torchrun --standalone train_gpt.py", tmp_path, "--trainer-cmd")
    with pytest.raises(InputError, match="torchrun would reject its arguments"):
        script_of("torchrun --nproc_per_node", tmp_path, "--trainer-cmd")


def test_env_values_read_back_with_the_usual_parses():
    assert format_env_value(True) == "1" and format_env_value(False) == "0"
    assert bool(int(format_env_value(False))) is False
    assert int(format_env_value(3600)) == 3600
    for value in (0.06, 1 / 3, 1e-8, 2.0 ** -9):
        assert float(format_env_value(value)) == value
    assert format_env_value("./data/") == "./data/"


def settings(trainer: TrainerSpec, **changes) -> TrialSettings:
    return TrialSettings(**{"sweep": "s", "preset": "tiny", "objective": Objective("val_loss"), "run_root": "/tmp/r",
                            "cwd": "/tmp", "mlflow_uri": "sqlite:///x.db", "experiment_id": "0", "parent_run_id": "p",
                            "trainer": trainer, **changes})


def test_env_mode_passes_every_key_in_the_environment_and_no_arguments(tmp_path):
    spec = TrainerSpec("torchrun --standalone train_gpt.py", "env", {"DATA_PATH": "./d/", "NCCL_IB_DISABLE": "1"})
    s = settings(spec, fixed={"ITERATIONS": 200, "TIE_EMBEDDINGS": False}, seed=10)
    values = {"MATRIX_LR": 0.06}
    # The command as written (through the loopback launcher when it is this environment's torchrun), no arguments.
    assert build_command(s, values, tmp_path) == loopback(["torchrun", "--standalone", "train_gpt.py"])
    variables = trial_variables(s, values, "sweep_trial_0003", 3)
    assert variables == {"RUN_ID": "sweep_trial_0003", "SEED": "13", "DATA_PATH": "./d/", "NCCL_IB_DISABLE": "1",
                         "ITERATIONS": "200", "TIE_EMBEDDINGS": "0", "MATRIX_LR": "0.06"}
    assert trial_params(s, values, variables) == variables
    env = trial_env(s, tmp_path, {**variables, RUN_DIR_ENV: "elsewhere"})
    assert env["MATRIX_LR"] == "0.06" and env[RUN_DIR_ENV] == str(tmp_path)
    # A space that sets the identity itself wins over the trial's.
    pinned = settings(spec, fixed={"SEED": 1337, "RUN_ID": "mine"})
    assert trial_variables(pinned, {}, "sweep_trial_0003", 3)["SEED"] == "1337"
    assert trial_variables(pinned, {}, "sweep_trial_0003", 3)["RUN_ID"] == "mine"


def test_args_mode_passes_key_value_arguments_as_before(tmp_path):
    s = settings(TrainerSpec(f"{sys.executable} fake.py", "args", {"NCCL_IB_DISABLE": "1"}),
                 fixed={"fp8.enabled": True})
    values = {"fp8.x_s": 0.25}
    assert build_command(s, values, tmp_path) == [sys.executable, "fake.py", "fp8.enabled=true", "fp8.x_s=0.25"]
    variables = trial_variables(s, values, "t", 0)
    assert variables == {"NCCL_IB_DISABLE": "1"}
    assert trial_params(s, values, variables) == {"fp8.enabled": "true", "fp8.x_s": "0.25", "NCCL_IB_DISABLE": "1"}


def plan_of(tmp_path: Path, monkeypatch, trainer: dict | None, *flags: str):
    space = {"name": "blk", "metric": "val_loss", "params": {"MATRIX_LR": {"type": "float", "low": 0.02, "high": 0.1}}}
    if trainer is not None:
        space["trainer"] = trainer
    (tmp_path / "blk.yaml").write_text(yaml.safe_dump(space))
    (tmp_path / STANDIN.name).write_text(STANDIN.read_text())
    monkeypatch.chdir(tmp_path)
    return build_plan(parser().parse_args(["run", "--space", "blk.yaml", *flags]))


def test_the_command_line_wins_over_the_trainer_block(tmp_path, monkeypatch):
    block = {"command": f"{sys.executable} golf_standin.py", "params": "env"}
    plan = plan_of(tmp_path, monkeypatch, block)
    assert (plan.trainer_cmd, plan.trainer_params) == (block["command"], "env")
    assert plan.space().trainer.env_mode
    other = f"{sys.executable} -m torch.distributed.run --standalone golf_standin.py"
    plan = plan_of(tmp_path, monkeypatch, block, "--trainer-cmd", other, "--trainer-params", "args")
    assert (plan.trainer_cmd, plan.trainer_params) == (other, "args")
    plan = plan_of(tmp_path, monkeypatch, None, "--trainer-cmd", block["command"], "--trainer-params", "env")
    assert plan.space().trainer == TrainerSpec(block["command"], "env")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blk.yaml", STANDIN.name]  # planning writes nothing


def test_no_check_keys_lets_a_name_the_script_builds_at_runtime_through(tmp_path, monkeypatch):
    block = {"command": f"{sys.executable} golf_standin.py", "params": "env"}
    with pytest.raises(InputError, match="--set BUILT_AT_RUNTIME: golf_standin.py never reads it"):
        plan_of(tmp_path, monkeypatch, block, "--set", "BUILT_AT_RUNTIME=1")
    plan = plan_of(tmp_path, monkeypatch, block, "--set", "BUILT_AT_RUNTIME=1", "--no-check-keys")
    assert plan.sets == {"BUILT_AT_RUNTIME": 1} and plan.trainer_params == "env"


def test_the_shipped_upstream_golf_space_sets_only_names_parameter_golf_reads(tmp_path):
    space = load_space(SPACES / "golf_upstream.yaml").with_trainer()
    assert space.trainer.env_mode and space.metric == "roundtrip_val_bpb"
    assert space.points_to_evaluate == [{"WARMDOWN_ITERS": 3600, "MATRIX_LR": 0.06},
                                        {"WARMDOWN_ITERS": 1200, "MATRIX_LR": 0.04}]
    assert space.trainer.env["VOCAB_SIZE"] == "1024"
    (tmp_path / "train_gpt.py").write_text(STANDIN.read_text())  # reads the same names as the upstream script
    script = script_of(space.trainer.command, tmp_path, "trainer.command")
    check_script_keys({key: key for key in [*space.params, *space.fixed]}, script)


@pytest.mark.parametrize("command, index", [
    ("python train_gpt.py --flag", 1),
    (f"{sys.executable} -u -X dev -W ignore train_gpt.py --flag", 6),
    ("python3 -m torch.distributed.run --standalone --nproc_per_node=8 train_gpt.py --flag", 5),
    ("torchrun --standalone --nproc_per_node 8 --tee 3 train_gpt.py train_gpt.py", 6),
    ("/usr/local/bin/torchrun --nnodes=1 --no-python ./train_gpt.py", 3),
    ("./train_gpt.py", 0),
])
def test_a_source_mode_trial_runs_its_copy_in_place_of_the_script(tmp_path, command, index):
    from sweep.inputs.trainer_spec import split_command, with_script

    (tmp_path / "train_gpt.py").write_text("import os\n")
    argv = split_command(command, "w")
    copy = tmp_path / "runs" / "trial_0000" / "source" / "train_gpt.py"
    assert with_script(command, tmp_path, copy, "w") == [*argv[:index], str(copy), *argv[index + 1:]]


def test_source_mode_passes_nothing_but_the_copy_and_records_the_literals(tmp_path):
    from sweep.inputs.source_sites import ScriptSites, edit

    (tmp_path / "train_gpt.py").write_text("LR = 0.1\nWD = 0\n")
    spec = TrainerSpec(f"{sys.executable} train_gpt.py", "source", {"NCCL_IB_DISABLE": "1"})
    s = settings(spec, cwd=str(tmp_path), fixed={"WD": 5})
    values = {"LR": 0.25}
    assert build_command(s, values, tmp_path / "t") == [sys.executable, str(tmp_path / "t" / "source" / "train_gpt.py")]
    assert trial_variables(s, values, "t", 0) == {"NCCL_IB_DISABLE": "1"}
    source = edit(ScriptSites((tmp_path / "train_gpt.py").read_bytes(), "train_gpt.py"), {"WD": 5, **values}, {}, "w")
    assert trial_params(s, values, {"NCCL_IB_DISABLE": "1"}, source) == {
        "WD": "5", "LR": "0.25", "NCCL_IB_DISABLE": "1", "source.sha256": source.sha256}
    assert spec.text(True) == "True" and spec.text("x") == "'x'" and spec.seed_key == ""
