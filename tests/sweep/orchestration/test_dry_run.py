"""`sweep run --dry-run`: every check of `sweep run`, then what the first trials would run, and nothing written
(no store, no runs/, nothing beside the script) with Ray never imported; in a fresh interpreter each time,
so whether Ray was imported can be told."""
from __future__ import annotations

import hashlib
import shlex
import sys
from pathlib import Path

import optuna
import yaml
from paths import SUPPORT
from sweeping import FAKE, sweep_run_in

from sweep.stores import tracking

STANDIN_DIR = SUPPORT / "source_standin"
FLOAT = {"type": "float", "low": 0.05, "high": 1.0, "log": True}


def folder_with_standin(folder: Path, trainer: dict, params: dict, **space) -> Path:
    (folder / "standin").mkdir()
    for entry in STANDIN_DIR.iterdir():
        if entry.is_file():
            (folder / "standin" / entry.name).write_bytes(entry.read_bytes())
    (folder / "stores").mkdir()
    data = {"name": "dry", "metric": "val_loss", "mode": "min", "trainer": trainer, "params": params, **space}
    (folder / "space.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return folder / "space.yaml"


def state(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder`, with the sha256 of each file's bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def stores_of(folder: Path) -> list[str]:
    return ["--mlflow-uri", f"sqlite:///{folder}/stores/mlflow.db", "--storage", f"sqlite:///{folder}/stores/optuna.db"]


SOURCE = {"command": f"{sys.executable} standin/train_standin.py", "params": "source"}
POINT = {"CastedLinearT.x_s": 0.25}


def test_a_source_mode_dry_run_writes_nothing_and_shows_each_trial(tmp_path):
    space = folder_with_standin(tmp_path, SOURCE, {"CastedLinearT.x_s": FLOAT}, fixed={"LR_FLOOR": 0.05},
                                points_to_evaluate=[POINT])
    before = state(tmp_path)
    done = sweep_run_in(tmp_path, "--space", str(space), "--trials", "3", "--seed", "2", "--name", "dry",
                        "--dry-run", *stores_of(tmp_path))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert out.splitlines()[-1] == "ray never imported"
    assert state(tmp_path) == before              # no store, no runs/, no logs/, nothing beside the script
    assert out.count("\ntrial ") == 3
    assert "\ntrial 0 (points_to_evaluate[0]): CastedLinearT.x_s=0.25\n" in out
    assert "\ntrial 1 (sampled): CastedLinearT.x_s=" in out and "\ntrial 2 (sampled): " in out
    copy = tmp_path / "runs" / "dry" / "trials" / "trial_0000" / "source" / "train_standin.py"
    assert f"  command: {shlex.join([sys.executable, str(copy)])}\n" in out
    assert f"  env: SWEEP_RUN_DIR={copy.parent.parent}\n" in out
    # The diff as `diff -u` prints it: the two lines that change, nothing else.
    first = out.split("\ntrial 0 ")[1].split("\ntrial 1 ")[0]
    changed = [line for line in first.splitlines() if line[:1] in "+-" and not line.startswith(("---", "+++"))]
    assert changed == ["-LR_FLOOR = 0.1", "+LR_FLOOR = 0.05",
                       "-        self.lm_head = CastedLinearT(use_fp8=True, x_s=100/448, w_s=1.6/448, grad_s=grad_scale * 0.75/448)",
                       "+        self.lm_head = CastedLinearT(use_fp8=True, x_s=0.25, w_s=1.6/448, grad_s=grad_scale * 0.75/448)"]
    assert f"--- {tmp_path / 'standin' / 'train_standin.py'}\tsha256:" in first


def test_the_samples_of_a_dry_run_follow_the_seed(tmp_path):
    space = folder_with_standin(tmp_path, SOURCE, {"CastedLinearT.x_s": FLOAT})

    def sampled(seed: str) -> list[str]:
        done = sweep_run_in(tmp_path, "--space", str(space), "--trials", "2", "--seed", seed, "--name", "dry",
                            "--dry-run", *stores_of(tmp_path))
        return [line for line in done.stdout.splitlines() if line.startswith("trial ")]

    assert sampled("3") == sampled("3") != sampled("4")
    # The sampler with that seed, asked as the sweep asks it, draws the values shown.
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(multivariate=True, seed=3))
    values = [study.ask({"CastedLinearT.x_s": optuna.distributions.FloatDistribution(0.05, 1.0, log=True)}).params
              for _ in range(2)]
    assert sampled("3") == [f"trial {i} (sampled): CastedLinearT.x_s={v['CastedLinearT.x_s']!r}"
                            for i, v in enumerate(values)]


def test_a_dry_run_leaves_existing_stores_as_they_were(tmp_path):
    space = folder_with_standin(tmp_path, SOURCE, {"CastedLinearT.x_s": FLOAT})
    tracking.client(f"sqlite:///{tmp_path}/stores/mlflow.db").search_experiments()
    optuna.create_study(study_name="other", storage=f"sqlite:///{tmp_path}/stores/optuna.db")
    before = state(tmp_path)
    done = sweep_run_in(tmp_path, "--space", str(space), "--trials", "2", "--dry-run", *stores_of(tmp_path))
    assert done.returncode == 0, done.stderr
    assert state(tmp_path) == before


def test_a_dry_run_fails_as_the_real_run_does(tmp_path):
    space = folder_with_standin(tmp_path, SOURCE, {"CastedLinearT.ws_s": FLOAT})
    before = state(tmp_path)
    dry = sweep_run_in(tmp_path, "--space", str(space), "--dry-run", *stores_of(tmp_path))
    real = sweep_run_in(tmp_path, "--space", str(space), *stores_of(tmp_path))
    assert dry.returncode == real.returncode == 2
    assert dry.stderr == real.stderr and "did you mean `CastedLinearT.w_s`?" in dry.stderr
    assert dry.stdout.strip() == real.stdout.strip() == "ray never imported"
    assert state(tmp_path) == before


def test_env_and_args_mode_dry_runs_show_the_variables_and_arguments(tmp_path):
    golf = {"command": f"{sys.executable} golf_standin.py", "params": "env", "env": {"DATA_PATH": "./d/"}}
    space = folder_with_standin(tmp_path, golf, {"MATRIX_LR": {"type": "float", "low": 0.02, "high": 0.1}},
                                fixed={"ITERATIONS": 20}, points_to_evaluate=[{"MATRIX_LR": 0.05}])
    (tmp_path / "golf_standin.py").write_bytes((SUPPORT / "golf_standin.py").read_bytes())
    before = state(tmp_path)
    done = sweep_run_in(tmp_path, "--space", str(space), "--trials", "1", "--seed", "7", "--name", "drytest",
                        "--dry-run", *stores_of(tmp_path))
    assert done.returncode == 0, done.stderr
    for line in ("  env: RUN_ID=drytest_trial_0000", "  env: SEED=7", "  env: DATA_PATH=./d/",
                 "  env: ITERATIONS=20", "  env: MATRIX_LR=0.05",
                 f"  command: {shlex.join([sys.executable, 'golf_standin.py'])}"):
        assert line in done.stdout.splitlines()
    done = sweep_run_in(tmp_path, "--space", str(space), "--trials", "1", "--dry-run", "--trainer-params", "args",
                        "--trainer-cmd", f"{sys.executable} {FAKE}", *stores_of(tmp_path))
    assert done.returncode == 0, done.stderr
    assert f"  command: {shlex.join([sys.executable, str(FAKE), 'ITERATIONS=20', 'MATRIX_LR=0.05'])}" \
        in done.stdout.splitlines()
    assert state(tmp_path) == before
