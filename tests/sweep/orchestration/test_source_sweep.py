"""Source mode end to end: sweeps of a script that reads nothing from its environment or arguments (a
modded-nanogpt style train_gpt.py, played by tests/support/source_standin/), each trial running its own
edited copy, on a real local Ray instance with real sqlite MLflow and Optuna stores; `--dry-run` showing
beforehand exactly what the trials then ran; a driver SIGKILL then `sweep resume`; a confirmation by
repeats of a script with no seed site, and `sweep verify` through the seed's site.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import scipy.stats
import yaml
from paths import REPO, SUPPORT
from sweeping import confirm_runs, processes_with, study, sweep_runs, wait_for

from sweep.cli import main as sweep_main
from sweep.commands.verify import ROLE as VERIFY_ROLE
from sweep.inputs.plan import load_plan
from sweep.inputs.source_sites import sha256
from sweep.orchestration.confirm import MARKDOWN_ARTIFACT
from sweep.report import stats
from sweep.stores import tracking
from sweep.stores.child_run import OUTPUT_LOG
from sweep.trial.command import SOURCE_DIFF, SOURCE_DIR, SOURCE_SHA_PARAM

pytestmark = pytest.mark.slow

STANDIN_DIR = SUPPORT / "source_standin"
SCRIPT = "train_standin.py"
LINES = (STANDIN_DIR / SCRIPT).read_text().splitlines()


def line_of(text: str) -> int:
    (number,) = [i for i, line in enumerate(LINES, 1) if text in line]
    return number


SMEAR = line_of("x_s=1.0)  # smear gate")
SITE_LINES = {"LR_FLOOR": line_of("LR_FLOOR = 0.1"), "CastedLinearT.x_s": line_of("self.lm_head = CastedLinearT("),
              "CastedLinearT.grad_s": line_of("self.lm_head = CastedLinearT("), f"CastedLinear.x_s@{SMEAR}": SMEAR,
              "Hyperparameters.num_scheduled_iterations": line_of("num_scheduled_iterations: int = 20"),
              "TrainingSchedule.cooldown_frac": line_of("schedule = TrainingSchedule("),
              "TrainingSchedule.split_embed_stage": line_of("def __init__(self, iterations, cooldown_frac"),
              "Hyperparameters.seed": line_of("seed: int = 0"), "Hyperparameters.jitter": line_of("jitter: float")}
PARAMS = {"CastedLinearT.x_s": {"type": "float", "low": 0.05, "high": 1.0, "log": True},
          "CastedLinearT.grad_s": {"type": "float", "low": 1.0e-4, "high": 0.01, "log": True,
                                   "expr": "grad_scale * {}"},
          "TrainingSchedule.cooldown_frac": {"type": "float", "low": 0.3, "high": 0.8},
          "TrainingSchedule.split_embed_stage": {"type": "int", "low": 1, "high": 3}}
FIXED = {"LR_FLOOR": 0.05, "Hyperparameters.num_scheduled_iterations": 12, f"CastedLinear.x_s@{SMEAR}": 0.5}
HEAD_POINT = {"CastedLinearT.x_s": 100 / 448, "CastedLinearT.grad_s": 0.75 / 448,
              "TrainingSchedule.cooldown_frac": 0.6, "TrainingSchedule.split_embed_stage": 2}


def standin_ops():
    spec = importlib.util.spec_from_file_location("standin_ops", STANDIN_DIR / "standin_ops.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def expected_loss(params: dict[str, str], seed: int = 0) -> float:
    """What the stand-in reports for a run whose child run holds `params`."""
    ops = standin_ops()
    knobs = {"x_s": float(params["CastedLinearT.x_s"]), "grad_s": float(params["CastedLinearT.grad_s"]),
             "cooldown_frac": float(params["TrainingSchedule.cooldown_frac"]),
             "split_embed_stage": int(params["TrainingSchedule.split_embed_stage"]),
             "lr_floor": float(params["LR_FLOOR"]), "smear_x_s": float(params[tracking.param_name(f"CastedLinear.x_s@{SMEAR}")]),
             "iterations": int(params["Hyperparameters.num_scheduled_iterations"]), "seed": seed}
    return ops.final_loss(knobs, ops.read_table((STANDIN_DIR / "standin_table.txt").read_text()))


def standin_folder(folder: Path, name: str, **space) -> Path:
    """`folder` holding a copy of the stand-in's folder as standin/ and a space file for it; the trials run
    in `folder`, so the script's logs/ is written there and standin/ must stay as it is."""
    (folder / "standin").mkdir()
    for entry in STANDIN_DIR.iterdir():
        if entry.is_file():
            (folder / "standin" / entry.name).write_bytes(entry.read_bytes())
    data = {"name": name, "metric": "val_loss", "mode": "min", "preset": "speedrun",
            "trainer": {"command": f"{sys.executable} standin/{SCRIPT}", "params": "source"},
            "params": PARAMS, "fixed": FIXED, "points_to_evaluate": [HEAD_POINT], **space}
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder`: its bytes (or link target) and mode."""
    out = {}
    for path in sorted(folder.rglob("*")):
        kind = os.readlink(path) if path.is_symlink() else path.read_bytes() if path.is_file() else "dir"
        out[str(path.relative_to(folder))] = (kind, path.lstat().st_mode)
    return out


def changed_lines(diff: str) -> set[int]:
    """The lines of the original that a unified diff removes or replaces."""
    changed, line = set(), 0
    for text in diff.splitlines()[2:]:
        hunk = re.match(r"@@ -(\d+)", text)
        if hunk:
            line = int(hunk.group(1))
        elif text.startswith("-"):
            changed.add(line)
            line += 1
        elif not text.startswith("+"):
            line += 1
    return changed


def artifact_text(client, run_id: str, path: str, folder: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(folder))).read_text()


def in_folder(folder: Path, *argv: str) -> tuple[int, str]:
    cwd = os.getcwd()
    os.chdir(folder)  # the trials run in the folder the sweep starts in
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            rc = sweep_main(list(argv))
    finally:
        os.chdir(cwd)
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def source_sweep(ray_local, stores, tmp_path_factory):
    folder = tmp_path_factory.mktemp("srcsweep")
    space = standin_folder(folder, "srcsweep", seed="Hyperparameters.seed")
    before = snapshot(folder / "standin")
    args = ["run", "--space", str(space), "--trials", "3", "--name", "srcsweep", "--seed", "5",
            "--mlflow-uri", stores["mlflow"], "--storage", stores["optuna"]]
    rc, dry = in_folder(folder, *args, "--dry-run")
    assert rc == 0
    assert sorted(p.name for p in folder.iterdir()) == ["space.yaml", "standin"]   # the dry run wrote nothing
    rc, _ = in_folder(folder, *args)
    assert rc == 0
    client, parent, children = sweep_runs(stores, "srcsweep")
    return folder, before, dry, client, children


def test_each_trial_gets_the_loss_its_own_values_imply(source_sweep, stores):
    _, _, _, client, children = source_sweep
    assert sorted(children) == [0, 1, 2]
    trials = {t.number: t for t in study(stores, "srcsweep").trials}
    objectives = set()
    for number, run in children.items():
        params, metrics = run.data.params, run.data.metrics
        assert run.info.status == "FINISHED"
        # grad_s went through its template: the script divides it by grad_scale again to get this value.
        assert metrics["final_val_loss"] == pytest.approx(expected_loss(params), abs=5e-5)
        assert metrics["objective"] == metrics["final_val_loss"] == trials[number].value
        assert trials[number].params == {key: type(trials[number].params[key])(params[key]) for key in PARAMS}
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [0, 5, 10, 12]
        objectives.add(metrics["objective"])
    assert len(objectives) == 3
    assert {k: float(children[0].data.params[k]) for k in HEAD_POINT} == HEAD_POINT


def test_each_source_diff_changes_only_the_addressed_lines(source_sweep, tmp_path):
    folder, _, _, client, children = source_sweep
    run_root = load_plan(folder / "runs", "srcsweep").run_root
    for number, run in children.items():
        diff = artifact_text(client, run.info.run_id, SOURCE_DIFF, tmp_path / str(number))
        split = int(run.data.params["TrainingSchedule.split_embed_stage"])
        addressed = {SITE_LINES[k] for k in [*PARAMS, *FIXED]}
        if split == 2:   # the default it already has: nothing to change on that line
            addressed.discard(SITE_LINES["TrainingSchedule.split_embed_stage"])
        assert changed_lines(diff) == addressed
        copy = run_root / f"trial_{number:04d}" / SOURCE_DIR / SCRIPT
        assert diff.splitlines()[1].startswith(f"+++ {copy}\tsha256:{run.data.params[SOURCE_SHA_PARAM]}")
        assert sha256(copy.read_bytes()) == run.data.params[SOURCE_SHA_PARAM]
        # The script logged its own source, read through sys.argv[0]: the copy, not the original.
        logfile = folder / (run_root / f"trial_{number:04d}" / OUTPUT_LOG).read_text().splitlines()[0]
        assert logfile.read_text().startswith(copy.read_text())


def test_the_scripts_folder_is_byte_identical_after_the_sweep(source_sweep):
    folder, before, _, _, _ = source_sweep
    assert snapshot(folder / "standin") == before
    assert len(list((folder / "logs").iterdir())) == 3      # the script's logs went where it writes them


def test_the_dry_run_showed_exactly_what_each_trial_ran(source_sweep, tmp_path):
    folder, _, dry, client, children = source_sweep
    run_root = load_plan(folder / "runs", "srcsweep").run_root
    assert "nothing was written and Ray was not started" in dry.splitlines()[0]
    sections = dry.split("\ntrial ")[1:]
    assert len(sections) == 3
    for number, section in enumerate(sections):
        run = children[number]
        head, _, diff = section.partition(f"  {SOURCE_DIFF} (sha256 of the copy {run.data.params[SOURCE_SHA_PARAM]}):\n")
        assert diff == artifact_text(client, run.info.run_id, SOURCE_DIFF, tmp_path / str(number))
        copy = run_root / f"trial_{number:04d}" / SOURCE_DIR / SCRIPT
        assert f"  command: {sys.executable} {copy}\n" in head
        assert f"  env: SWEEP_RUN_DIR={run_root / f'trial_{number:04d}'}\n" in head
        shown = dict(item.split("=") for item in head.splitlines()[0].split(": ", 1)[1].split(", "))
        assert shown == {k: run.data.params[k] for k in PARAMS}


def test_verify_reruns_the_best_edited_script_through_the_seed_site(source_sweep, stores, tmp_path):
    folder, before, _, client, children = source_sweep
    rc, out = in_folder(folder, "verify", "srcsweep", "--seeds", "2")
    assert rc == 0, out
    best = min(children.values(), key=lambda r: r.data.metrics["objective"])
    exp = client.get_experiment_by_name("srcsweep")
    (parent,) = client.search_runs([exp.experiment_id], f"tags.`{tracking.TAG_ROLE}` = '{VERIFY_ROLE}'")
    runs = sorted(tracking.child_runs(client, exp.experiment_id, parent.info.run_id),
                  key=lambda r: int(r.data.params["Hyperparameters.seed"]))
    assert [r.data.params["Hyperparameters.seed"] for r in runs] == ["0", "1"]
    losses = []
    for seed, run in enumerate(runs):
        assert {k: run.data.params[k] for k in PARAMS} == {k: best.data.params[k] for k in PARAMS}
        assert run.data.metrics["final_val_loss"] == pytest.approx(expected_loss(run.data.params, seed), abs=5e-5)
        diff = artifact_text(client, run.info.run_id, SOURCE_DIFF, tmp_path / str(seed))
        assert SITE_LINES["Hyperparameters.seed"] in changed_lines(diff) or seed == 0
        losses.append(run.data.metrics["final_val_loss"])
    # The speedrun's rule: one-sided one-sample t-test against 3.28.
    assert parent.data.metrics["p_value"] == pytest.approx(stats.one_sided_ttest(losses, 3.28))
    assert "final_val_loss against 3.28" in out
    assert snapshot(folder / "standin") == before


def test_a_killed_driver_then_resume_leaves_the_scripts_folder_byte_identical(ray_local, stores, workdir):
    name = f"srcresume-{uuid.uuid4().hex[:8]}"     # in the path of every copy the trials run
    space = standin_folder(workdir, "srcresume", fixed={**FIXED, "STEP_SECONDS": 0.25})
    before = snapshot(workdir / "standin")
    driver = subprocess.Popen(
        [sys.executable, "-m", "sweep", "run", "--space", str(space), "--trials", "4", "--concurrency", "2",
         "--name", name, "--mlflow-uri", stores["mlflow"], "--storage", stores["optuna"]],
        cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def completed() -> int:
        try:
            return len(study(stores, name).get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
        except KeyError:
            return 0

    try:
        wait_for(lambda: completed() >= 1 and processes_with(name), 180, "a finished trial and a running one")
    finally:
        driver.kill()
        driver.wait()
    wait_for(lambda: not processes_with(name), 30, "the killed sweep's trials to exit")
    assert snapshot(workdir / "standin") == before

    assert sweep_main(["resume", name]) == 0
    trials = study(stores, name).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    client, _, children = sweep_runs(stores, name)
    for t in trials:
        run = children[t.number]
        assert run.data.metrics["objective"] == t.value == pytest.approx(expected_loss(run.data.params), abs=5e-5)
    restarted = [n for n, run in children.items() if run.data.tags[tracking.TAG_ATTEMPT] == "2"]
    assert restarted      # a trial cut off by the kill ran again, from a fresh copy in a fresh run directory
    run_root = load_plan(workdir / "runs", name).run_root
    for n in restarted:
        assert (run_root / f"trial_{n:04d}.attempt1" / SOURCE_DIR / SCRIPT).is_file()
        assert (run_root / f"trial_{n:04d}" / SOURCE_DIR / SCRIPT).is_file()
    assert snapshot(workdir / "standin") == before
    assert processes_with(name) == []


def test_a_script_without_a_seed_site_is_confirmed_by_repeats_tested_unpaired(ray_local, stores, workdir, tmp_path):

    # The jitter makes repeats differ, as modded-nanogpt's runs differ by nondeterminism; it is wide enough that
    # three repeats printed to 4 decimals almost never coincide.
    space = standin_folder(workdir, "srcconfirm", fixed={**FIXED, "Hyperparameters.jitter": 0.5})
    rc, out = in_folder(workdir, "run", "--space", str(space), "--trials", "2", "--name", "srcconfirm", "--seed", "1",
                        "--confirm", "1", "--confirm-seeds", "3", "--confirm-fixed", "--mlflow-uri", stores["mlflow"],
                        "--storage", stores["optuna"])
    assert rc == 0, out
    assert "3 times each (the script names no seed site: unpaired repeats)" in out
    client, parent, _ = sweep_runs(stores, "srcconfirm")
    confirmation, runs = confirm_runs(client, parent)
    assert sorted(runs) == list(range(6))
    losses = {0: [], 1: []}
    for number, run in runs.items():
        assert "Hyperparameters.seed" not in run.data.params
        assert SITE_LINES["Hyperparameters.seed"] not in changed_lines(
            artifact_text(client, run.info.run_id, SOURCE_DIFF, tmp_path / str(number)))
        losses[number // 3].append(run.data.metrics["final_val_loss"])
    assert len(set(losses[0])) == 3           # repeats of one configuration differ
    p = parent.data.metrics["confirm.trial_1.p_value"]
    assert p == pytest.approx(stats.welch_test(losses[1], losses[0], 0.0, "less"))
    assert p == pytest.approx(scipy.stats.ttest_ind(losses[1], losses[0], equal_var=False, alternative="less").pvalue)
    report = artifact_text(client, parent.info.run_id, MARKDOWN_ARTIFACT, tmp_path / "report")
    assert "the runs are unpaired" in report and "equal_var=False" in report and "| repeat |" in report
