"""Sweeping a script that reads its hyperparameters from the environment (a parameter-golf style
train_gpt.py, played by tests/golf_standin.py): a real env-mode sweep on a real local Ray instance with
real sqlite MLflow and Optuna stores, and the misspelt keys that must stop a sweep before anything is
written.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from golf_standin import hyperparameters, score_bpb, ttt_bpb, val_loss
from paths import SUPPORT
from sweeping import confirm_runs, study, sweep_run_in, sweep_runs

from sweep.cli import main as sweep_main
from sweep.commands import import_logs
from sweep.inputs.plan import load_plan
from sweep.runlog.logparse import parse_log
from sweep.stores import tracking
from sweep.stores.child_run import OUTPUT_LOG

pytestmark = pytest.mark.slow  # starts Ray or torchrun processes

STANDIN = SUPPORT / "golf_standin.py"
SWEEP_SEED = 100
SPACE = {
    "name": "envgolf",
    "metric": "roundtrip_val_bpb",
    "mode": "min",
    "trainer": {"command": f"{sys.executable} golf_standin.py", "params": "env",
                # NCCL_IB_DISABLE is never read by the script: trainer.env entries are passed unchecked.
                "env": {"DATA_PATH": "./data/datasets/fineweb10B_sp1024/", "NCCL_IB_DISABLE": 1}},
    "params": {"WARMDOWN_ITERS": {"type": "int", "low": 400, "high": 6000, "log": True},
               "MATRIX_LR": {"type": "float", "low": 0.02, "high": 0.1, "log": True},
               "TIE_EMBEDDINGS": {"type": "categorical", "choices": [True, False]}},
    "fixed": {"ITERATIONS": 20, "VAL_LOSS_EVERY": 5},
    "points_to_evaluate": [{"WARMDOWN_ITERS": 3600, "MATRIX_LR": 0.06, "TIE_EMBEDDINGS": True},
                           {"WARMDOWN_ITERS": 1200, "MATRIX_LR": 0.04, "TIE_EMBEDDINGS": False}],
}


def standin_folder(folder: Path, **changes) -> Path:
    """`folder` holding the stand-in script and a space file (SPACE with `changes` to its top level)."""
    shutil.copy(STANDIN, folder / STANDIN.name)
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump({**SPACE, **changes}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def env_sweep(ray_local, stores, tmp_path_factory):
    folder = tmp_path_factory.mktemp("envgolf")
    space = standin_folder(folder)
    cwd = os.getcwd()
    os.chdir(folder)  # the trials run in the folder the sweep starts in, where the script writes logs/
    try:
        rc = sweep_main(["run", "--space", str(space), "--trials", "3", "--name", "envgolf", "--seed", str(SWEEP_SEED),
                         "--mlflow-uri", stores["mlflow"], "--storage", stores["optuna"]])
    finally:
        os.chdir(cwd)
    assert rc == 0
    client, parent, children = sweep_runs(stores, "envgolf")
    return folder, client, children


def test_each_trial_gets_the_loss_its_own_values_imply(env_sweep, stores):
    _, client, children = env_sweep
    assert sorted(children) == [0, 1, 2]
    trials = {t.number: t for t in study(stores, "envgolf").trials}
    objectives = set()
    for number, run in children.items():
        assert run.info.status == "FINISHED"
        hp = hyperparameters(run.data.params)  # what the stand-in reads from that environment
        expected = score_bpb(hp)
        metrics = run.data.metrics
        # The score is the last evaluation (the sliding window), at its _exact precision.
        assert metrics["objective"] == metrics["roundtrip_val_bpb"] == pytest.approx(expected, abs=1e-9)
        assert metrics["final_val_loss"] == pytest.approx(val_loss(hp, 20), abs=5e-5)
        assert trials[number].value == metrics["objective"]
        assert trials[number].params == {"WARMDOWN_ITERS": hp["warmdown_iters"], "MATRIX_LR": hp["matrix_lr"],
                                         "TIE_EMBEDDINGS": hp["tie_embeddings"]}
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 5, 10, 15, 20]
        objectives.add(metrics["objective"])
    assert len(objectives) == 3
    first = children[0].data.params
    assert (first["WARMDOWN_ITERS"], first["MATRIX_LR"], first["TIE_EMBEDDINGS"]) == ("3600", "0.06", "1")
    assert children[1].data.params["TIE_EMBEDDINGS"] == "0"


def test_the_script_read_exactly_the_values_the_sweep_recorded(env_sweep, stores):
    folder, client, children = env_sweep
    run_root = load_plan(folder / "runs", "envgolf").run_root
    trials = {t.number: t for t in study(stores, "envgolf").trials}
    for number, run in children.items():
        # The stand-in echoes what it parsed: a float passed with repr() comes back bit for bit.
        echoed = parse_log((run_root / f"trial_{number:04d}" / OUTPUT_LOG).read_text()).hyperparameters
        assert float(echoed["matrix_lr"]) == trials[number].params["MATRIX_LR"]
        assert int(echoed["warmdown_iters"]) == trials[number].params["WARMDOWN_ITERS"]
        assert echoed["tie_embeddings"] == str(trials[number].params["TIE_EMBEDDINGS"])
        assert echoed["seed"] == str(SWEEP_SEED + number)
        params = run.data.params
        # one name per trial: its child run and run directory; RUN_ID adds the sweep's, as the script's
        # logs/<RUN_ID>.txt shares a folder with every other sweep started there
        assert run.info.run_name == f"trial_{number:04d}"
        assert params["RUN_ID"] == f"envgolf_trial_{number:04d}" and params["SEED"] == str(SWEEP_SEED + number)
        assert params["DATA_PATH"] == "./data/datasets/fineweb10B_sp1024/" and params["NCCL_IB_DISABLE"] == "1"
        assert params["ITERATIONS"] == "20" and params["VAL_LOSS_EVERY"] == "5"
        script_log = f"logs/{params['RUN_ID']}.txt"
        assert [a.path for a in client.list_artifacts(run.info.run_id, "logs")] == [script_log]
        assert (folder / script_log).is_file()


def test_live_lines_and_import_logs_give_the_same_events(env_sweep, stores):
    folder, client, children = env_sweep
    run = children[1]
    script_log = folder / "logs" / f"{run.data.params['RUN_ID']}.txt"
    report = import_logs.import_logs([script_log], "envgolf-imported", stores["mlflow"])
    (imported,) = report.imported
    assert imported.complete
    imported_run = client.get_run(imported.run_id)
    for key in ("val_loss", "val_bpb", "train_loss", "train_time_ms", "step_avg_ms"):
        live = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        offline = [(m.step, m.value) for m in client.get_metric_history(imported.run_id, key)]
        assert sorted(live) == sorted(offline) and live, key
    shared = ("final_val_loss", "final_val_bpb", "final_peak_mem_mib", "artifact_bytes", "total_bytes",
              "roundtrip_val_loss", "roundtrip_val_bpb")
    assert {k: run.data.metrics[k] for k in shared} == {k: imported_run.data.metrics[k] for k in shared}
    assert imported_run.data.tags[tracking.TAG_STATUS] == run.data.tags[tracking.TAG_STATUS] == "ok"


def test_a_confirmation_passes_each_seed_as_SEED_and_the_script_reads_it(ray_local, stores, tmp_path):

    from sweep.stores import results_dir

    space = standin_folder(tmp_path)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rc = sweep_main(["run", "--space", str(space), "--trials", "2", "--name", "envconfirm", "--seed", "7",
                         "--confirm", "1", "--confirm-seeds", "2", "--mlflow-uri", stores["mlflow"],
                         "--storage", stores["optuna"]])
    finally:
        os.chdir(cwd)
    assert rc == 0
    client, parent, _ = sweep_runs(stores, "envconfirm")
    _, runs = confirm_runs(client, parent)
    assert sorted(runs) == [0, 1, 2, 3]      # the baseline and trial 1, each on seeds 1 and 2
    plan = load_plan(tmp_path / "runs", "envconfirm")
    run_root = results_dir.local_folder(plan.results_dir, plan.confirm_name) / "trials"
    for number, run in runs.items():
        seed = number % 2 + 1
        assert run.data.params["SEED"] == str(seed)
        echoed = parse_log((run_root / f"trial_{number:04d}" / OUTPUT_LOG).read_text()).hyperparameters
        assert echoed["seed"] == str(seed)   # what the script itself read from its environment


def test_verify_reruns_an_env_mode_sweeps_best_trial_with_SEED(env_sweep, stores):
    folder, client, children = env_sweep
    cwd = os.getcwd()
    os.chdir(folder)  # where the space's command finds its script
    try:
        rc = sweep_main(["verify", "envgolf", "--seeds", "2", "--target", "1.0", "--results-dir", str(folder / "runs")])
    finally:
        os.chdir(cwd)
    assert rc == 0  # every seed gave a loss (2.x does not beat 1.0: the verdict is in the report)
    sweep_parent = client.search_runs([children[0].info.experiment_id], f"tags.`{tracking.TAG_ROLE}` = 'verify'")
    assert len(sweep_parent) == 1
    seeds = tracking.child_runs(client, children[0].info.experiment_id, sweep_parent[0].info.run_id)
    assert len(seeds) == 2
    best = min(children.values(), key=lambda r: r.data.metrics["objective"])
    run_root = folder / "runs" / "envgolf-verify" / "trials"
    for run in seeds:
        number = int(run.data.tags[tracking.TAG_TRIAL_NUMBER])
        params = run.data.params
        assert params["SEED"] == str(number)    # trial i runs seed i, as an environment variable
        echoed = parse_log((run_root / f"trial_{number:04d}" / OUTPUT_LOG).read_text()).hyperparameters
        assert echoed["seed"] == str(number)   # what the script read
        for key in ("WARMDOWN_ITERS", "MATRIX_LR", "TIE_EMBEDDINGS", "ITERATIONS", "DATA_PATH"):
            assert params[key] == best.data.params[key]
        # The sweep judged round-trip scores, so the claim tests the round-trip loss.
        assert sweep_parent[0].data.tags["sweep.verify.loss"] == "roundtrip_val_loss"
        assert run.data.metrics["roundtrip_val_loss"] == pytest.approx(best.data.metrics["roundtrip_val_loss"])


@pytest.mark.slow
def test_a_trial_that_never_prints_the_named_evaluation_gets_the_penalty(ray_local, stores, tmp_path, capsys):
    from sweep.commands.compare import table
    from sweep.report.trial_rows import sweep_rows

    # The frontier records' shape: two diagnostics, then the score, which trial 1 (TTT off) never prints.
    space = standin_folder(tmp_path, name="envgolfeval", metric="eval.quantized_ttt_phased.val_bpb",
                           params={"MATRIX_LR": SPACE["params"]["MATRIX_LR"],
                                   "TTT_ENABLED": {"type": "categorical", "choices": [True, False]}},
                           fixed={**SPACE["fixed"], "EVAL_SHAPE": "quantized"},
                           points_to_evaluate=[{"MATRIX_LR": 0.05, "TTT_ENABLED": True},
                                               {"MATRIX_LR": 0.05, "TTT_ENABLED": False}])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        rc = sweep_main(["run", "--space", str(space), "--trials", "2", "--name", "envgolfeval",
                         "--mlflow-uri", stores["mlflow"], "--storage", stores["optuna"]])
    finally:
        os.chdir(cwd)
    assert rc == 0
    printed = capsys.readouterr().out
    _, _, children = sweep_runs(stores, "envgolfeval")
    scored, silent = children[0], children[1]
    expected = ttt_bpb(hyperparameters(scored.data.params))
    assert scored.data.metrics["objective"] == pytest.approx(expected, abs=1e-9)
    assert scored.data.metrics["roundtrip_val_bpb"] == scored.data.metrics["objective"]
    diagnostics = "diagnostic_pre-quantization_post-ema, diagnostic_quantized"
    assert scored.data.tags[tracking.TAG_OBJECTIVE_FROM] == "quantized_ttt_phased"
    assert scored.data.tags[tracking.TAG_EVAL_LABELS] == f"{diagnostics}, quantized_ttt_phased"
    # Trial 1 finished (a result, not a crash) but printed only diagnostics: the penalty, and what it printed.
    assert silent.info.status == "FINISHED" and silent.data.tags[tracking.TAG_STATUS] == "ok"
    assert silent.data.metrics["objective"] == 1.0e6
    assert "roundtrip_val_bpb" not in silent.data.metrics   # a diagnostic is never the record's score
    assert silent.data.tags[tracking.TAG_OBJECTIVE_FROM] == "penalty: quantized_ttt_phased not printed"
    assert silent.data.tags[tracking.TAG_EVAL_LABELS] == diagnostics
    assert {t.number: t.value for t in study(stores, "envgolfeval").trials} == {
        0: scored.data.metrics["objective"], 1: 1.0e6}
    # The leaderboard and `sweep compare` say where each objective came from.
    board = printed[printed.index("rank"):].splitlines()
    assert board[0].split()[:5] == ["rank", "trial", "status", "eval.quantized_ttt_phased.val_bpb", "from"]
    assert board[1].split()[1] == "trial_0000" and "quantized_ttt_phased" in board[1].split()
    assert board[2].split()[1] == "trial_0001" and "penalty: quantized_ttt_phased not printed" in board[2]
    plan = load_plan(tmp_path / "runs", "envgolfeval")
    compared = table(sweep_rows(plan), plan).splitlines()
    assert compared[0].split()[3:5] == ["objective", "from"]
    assert "penalty: quantized_ttt_phased not printed" in compared[2]


TORCHRUN_STANDIN = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node=1 golf_standin.py"


def test_a_misspelt_key_exits_2_before_anything_is_written(tmp_path):
    params = {**SPACE["params"], "WARMDOWN_ITER": SPACE["params"]["WARMDOWN_ITERS"]}
    del params["WARMDOWN_ITERS"]
    points = [{("WARMDOWN_ITER" if k == "WARMDOWN_ITERS" else k): v for k, v in p.items()}
              for p in SPACE["points_to_evaluate"]]
    standin_folder(tmp_path, trainer={**SPACE["trainer"], "command": TORCHRUN_STANDIN}, params=params,
                   fixed={"ITERATION": 20}, points_to_evaluate=points)
    done = sweep_run_in(tmp_path, "--space", "space.yaml")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("sweep run: checking the search space space.yaml, ")
    assert lines[1] == ("sweep run: error: space.yaml: params.WARMDOWN_ITER: golf_standin.py never reads it; "
                        "did you mean WARMDOWN_ITERS?")
    assert lines[2] == "space.yaml: fixed.ITERATION: golf_standin.py never reads it; did you mean ITERATIONS?"
    assert "--no-check-keys" in lines[3]
    assert done.stdout.strip() == "ray never imported"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golf_standin.py", "space.yaml"]


@pytest.mark.parametrize("args, changes, message", [
    (["--set", "MATRIX_LRS=0.05"], {}, "--set MATRIX_LRS: golf_standin.py never reads it; did you mean MATRIX_LR?"),
    ([], {"points_to_evaluate": [{"WARMDOWN_ITERS": 3600, "MATRIX_LRR": 0.06, "TIE_EMBEDDINGS": True}]},
     "points_to_evaluate[0].MATRIX_LRR: is not a swept parameter of this space; did you mean MATRIX_LR?"),
    ([], {"fixed": {"matrix_lr": 0.05}}, "fixed: 'matrix_lr' is not an environment variable name"),
    ([], {"trainer": {**SPACE["trainer"], "command": f"{sys.executable} nowhere/train_gpt.py"}},
     "nowhere/train_gpt.py, which does not exist (trials run in"),
    ([], {"trainer": {"params": "env"}}, "trainer.params: env mode passes the keys as environment variables"),
    (["--trainer-cmd", f"{sys.executable} golf_standin.py", "--trainer-params", "env", "--set", "SEED=5"],
     {"trainer": {"env": {"SEED": 7}}}, "--set: SEED is also set in trainer.env"),
])
def test_bad_env_mode_input_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys, args, changes, message):
    standin_folder(tmp_path, **changes)
    monkeypatch.chdir(tmp_path)
    assert sweep_main(["run", "--space", "space.yaml", *args]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["golf_standin.py", "space.yaml"]
