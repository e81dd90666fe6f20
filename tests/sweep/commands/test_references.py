"""Logs imported beside a sweep's trials (`sweep import-logs --sweep`, the reference curves of `sweep compare`)
and `sweep compare` at 50 trials, on synthetic sweeps: real sqlite MLflow and Optuna stores written through
their public APIs as the driver writes them, and a saved plan; no Ray, no training."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from paths import LOGS
from synthetic_sweep import make_sweep, save_plan

from sweep.cli import main as sweep_main
from sweep.cli import parser as sweep_parser
from sweep.commands import compare, import_logs
from sweep.inputs.plan import SweepPlan
from sweep.stores import credentials, tracking

PICTURES = ("loss_curves.png", "optimization_history.png", "parallel_coordinates.png", "importance.png",
            "fp8_scale_contours.png", "fp8_ranges.png")
TRIAL_ROW = re.compile(r"^\s*\d+\s+trial_\d{4}\s+ok\s")


def trial_lines(printed: str) -> list[str]:
    return [line for line in printed.splitlines() if TRIAL_ROW.match(line)]


def imports(plan: SweepPlan) -> list:
    client = MlflowClient(plan.mlflow_uri)
    experiment = client.get_experiment_by_name(plan.experiment)
    return client.search_runs([experiment.experiment_id], f"tags.`{tracking.TAG_ROLE}` = '{tracking.IMPORT_ROLE}'")


def test_compare_page_of_a_50_trial_sweep_stays_under_1_mb(tmp_path, capsys):
    plan = make_sweep(tmp_path, "fifty", 50)
    out = tmp_path / "plots"
    assert sweep_main(["compare", "fifty", "--results-dir", plan.results_dir, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert len(trial_lines(printed)) == 50
    # GPU trials count GPU-hours; columns no trial has a value in (no export, no objective source, none
    # running) are left out
    header = next(line.split() for line in printed.splitlines() if line.startswith("rank "))
    assert header[:4] == ["rank", "trial", "status", "objective"] and header[-2:] == ["wallclock_s", "gpu_hours"]
    assert not {"from", "roundtrip_val_bpb", "latest"} & set(header)
    importance = next(line for line in printed.splitlines() if line.startswith("parameter importance: "))
    assert importance.startswith("parameter importance: fp8.x_s ") and "unreliable" not in importance
    for name in PICTURES:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    page = out / "compare.html"
    assert page.read_text().count("src='data:image/png;base64,") == len(PICTURES)
    assert page.stat().st_size < 1_000_000, page.stat().st_size
    # the files written, one per line
    assert f"written (also on the parent MLflow run under compare/):\n  {out / 'trials.txt'}\n" in printed
    assert printed.rstrip().endswith(f"\n  {out / 'compare.html'}")


def test_logs_imported_for_a_sweep_are_its_reference_curves_not_its_trials(tmp_path, capsys):
    plan = make_sweep(tmp_path, "golf", 6)
    other = tmp_path / "other-record"
    other.mkdir()
    shutil.copy(LOGS / "parameter_golf_int6_sliding.txt", other / "parameter_golf_int8.txt")  # a name twice
    shutil.copy(LOGS / "not_a_log.txt", other / "notes.txt")   # in a folder: skipped
    logs = [LOGS / "parameter_golf_int8.txt", other / "parameter_golf_int8.txt", LOGS / "parameter_golf_truncated.txt"]
    capsys.readouterr()
    assert sweep_main(["import-logs", str(logs[0]), str(other), str(logs[2]), "--sweep", "golf",
                       "--results-dir", plan.results_dir]) == 0
    printed = capsys.readouterr().out
    assert "3 imported, 0 already present, 1 skipped (experiment 'fp8_scales', sweep 'golf' in " \
           f"{plan.mlflow_uri})" in printed
    assert f"mlflow ui --backend-store-uri {plan.mlflow_uri}" in printed
    runs = imports(plan)
    assert len(runs) == 3
    assert all(r.data.tags[tracking.TAG_SWEEP] == "golf" and r.info.experiment_id == runs[0].info.experiment_id
               for r in runs)
    assert {r.data.tags[tracking.TAG_IMPORT_PATH] for r in runs} == {str(p.resolve()) for p in logs[:3]}

    # The same content again is already there; logs imported into the experiment for no sweep are no
    # references of this one.
    assert sweep_main(["import-logs", str(LOGS / "parameter_golf_int8.txt"), "--sweep", "golf",
                       "--results-dir", plan.results_dir]) == 0
    assert "0 imported, 1 already present" in capsys.readouterr().out
    assert sweep_main(["import-logs", str(LOGS / "parameter_golf_2026.txt"), "--experiment", "fp8_scales",
                       "--mlflow-uri", plan.mlflow_uri]) == 0
    assert len(imports(plan)) == 4
    capsys.readouterr()

    out = tmp_path / "plots"
    assert sweep_main(["compare", "golf", "--results-dir", plan.results_dir, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sweep golf: 6 trials," in printed and len(trial_lines(printed)) == 6
    assert "(from 6 finished trials: unreliable below about 20, the order can change with a few more)" in printed
    references = [line for line in printed.splitlines() if line.startswith("reference: ")]
    assert len(references) == 3 and "parameter_golf_2026" not in printed
    first = references[0].split()
    assert first[1] == "parameter_golf_int8.txt" or first[1].endswith("/parameter_golf_int8.txt")
    by_label = dict(zip(first[2::2], first[3::2]))
    assert float(by_label["final_val_loss"]) == pytest.approx(2.0606)
    assert float(by_label["final_val_bpb"]) == pytest.approx(1.2172)
    assert float(by_label["roundtrip_val_bpb"]) == pytest.approx(1.22437, rel=1e-5)
    # the run's training finished, the log stops before the export's round trip
    assert "roundtrip_val_bpb -" in references[2] and references[2].endswith("(incomplete log)")
    assert references[0] in (out / "trials.txt").read_text() and "reference: " in (out / "compare.html").read_text()

    refs = compare.references(plan)
    assert sorted(refs) == ["logs/parameter_golf_int8.txt", "other-record/parameter_golf_int8.txt",
                            "parameter_golf_truncated.txt"]
    curves = compare.loss_curves(plan, {label: run.info.run_id for label, run in refs.items()})
    # train_time_ms of a step is its first line's, the train line, as in a trial's history
    assert dict(curves["logs/parameter_golf_int8.txt"]) == pytest.approx(
        {0.0: 6.9370, 8.677: 2.8397, 17.357: 2.5687, 600.038: 2.0606})
    assert curves["other-record/parameter_golf_int8.txt"][-1][0] == pytest.approx(599.914, abs=1)
    study = optuna.load_study(study_name="golf", storage=plan.storage)
    assert len(study.trials) == 6
    assert sweep_main(["list", "--mlflow-uri", plan.mlflow_uri]) == 0
    row = next(line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("golf "))
    assert row[3:5] == ["6", "6"]


def test_import_logs_for_two_sweeps_of_one_experiment_gives_each_its_own_run(tmp_path, capsys):
    first = make_sweep(tmp_path, "first", 2)
    second = make_sweep(tmp_path, "second", 2)
    log = str(LOGS / "parameter_golf_int8.txt")
    for plan in (first, second):
        assert sweep_main(["import-logs", log, "--sweep", plan.name, "--results-dir", plan.results_dir]) == 0
        assert "1 imported" in capsys.readouterr().out
    assert sorted(r.data.tags[tracking.TAG_SWEEP] for r in imports(first)) == ["first", "second"]
    assert list(compare.references(first).values())[0].data.tags[tracking.TAG_SWEEP] == "first"


def test_bad_import_input_exits_2_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default store, mlflow.db, would go
    plan = save_plan(tmp_path / "sweep", "planned")  # a plan whose store does not exist yet
    log = str(LOGS / "parameter_golf_int8.txt")
    results = ["--results-dir", plan.results_dir]
    cases = [
        (["--sweep", "nope", *results], "nope: no sweep of that name"),
        (["--sweep", "planned"], "planned: no sweep of that name"),    # not in the default results dir
        (["--sweep", "planned", *results, "--mlflow-uri", f"sqlite:///{tmp_path / 'other.db'}"],
         f"--mlflow-uri: sweep planned keeps its runs in {plan.mlflow_uri}, not sqlite:///{tmp_path / 'other.db'}"),
        (["--sweep", "planned", *results, "--experiment", "elsewhere"],
         "--experiment: sweep planned's runs are in experiment 'fp8_scales', not 'elsewhere'"),
        (["--sweep", "", *results], "--sweep: a sweep name is one folder name"),
        ([*results], "--results-dir: names where a sweep lives; it needs --sweep NAME"),
        ([str(tmp_path / "missing.txt"), "--sweep", "planned", *results], f"{tmp_path / 'missing.txt'}: no such file"),
    ]
    for flags, message in cases:
        assert sweep_main(["import-logs", log, *flags]) == 2, flags
        assert f"sweep import-logs: error: {message}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["planned", "runs", "sweep", "sweep.json"]

    # The sweep's own store given in relative form is no conflict.
    assert sweep_main(["import-logs", log, "--sweep", "planned", *results,
                       "--mlflow-uri", "sqlite:///sweep/mlflow.db"]) == 0
    assert len(imports(plan)) == 1


def test_commands_print_store_paths_absolute(tmp_path, capsys, monkeypatch):
    make_sweep(tmp_path / "sweep", "abs", 2)
    monkeypatch.chdir(tmp_path)
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    tracking.client("sqlite:///empty.db")
    capsys.readouterr()
    assert sweep_main(["list", "--mlflow-uri", "sqlite:///empty.db"]) == 0
    assert capsys.readouterr().out.strip() == f"no sweeps in {empty}"

    log = Path(shutil.copy(LOGS / "parameter_golf_int8.txt", tmp_path / "record.txt")).relative_to(tmp_path)
    assert sweep_main(["import-logs", str(log), "--mlflow-uri", "sqlite:///empty.db"]) == 0
    printed = capsys.readouterr().out
    assert f"(experiment 'imported-logs' in {empty})" in printed
    assert printed.rstrip().endswith(f"view with: mlflow ui --backend-store-uri {empty}")
    client = MlflowClient(empty)
    (run,) = client.search_runs([client.get_experiment_by_name("imported-logs").experiment_id])
    assert run.data.tags[tracking.TAG_IMPORT_PATH] == str(tmp_path / "record.txt")

    assert sweep_main(["compare", "abs", "--results-dir", "sweep/runs", "--out", "plots"]) == 0
    written = capsys.readouterr().out.split("written (also on the parent MLflow run under compare/):\n")[1]
    assert written.splitlines()[:2] == [f"  {tmp_path / 'plots' / name}" for name in ("trials.txt", "loss_curves.png")]


def test_import_destination_keeps_the_password_out_of_what_it_prints(tmp_path, monkeypatch):
    # credentials puts the password in the environment; set-then-delete makes monkeypatch restore each
    # variable afterwards even where it was unset (a bare delenv of an unset one records nothing), so no
    # later test's store gets it.
    for name in credentials.SECRET_ENV + (credentials.MLFLOW_USERNAME_ENV,):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    plan = save_plan(tmp_path, "served")
    plan.mlflow_uri = "https://alice@mlflow.example.com"
    plan.save()
    log = str(LOGS / "parameter_golf_int8.txt")
    with_password = "https://alice:secret@mlflow.example.com"
    args = sweep_parser().parse_args(["import-logs", log, "--sweep", "served", "--results-dir", plan.results_dir,
                                      "--mlflow-uri", with_password])
    assert import_logs.destination(args) == ("https://alice@mlflow.example.com", "fp8_scales", "served")
    args = sweep_parser().parse_args(["import-logs", log, "--mlflow-uri", with_password])
    assert import_logs.destination(args) == ("https://alice@mlflow.example.com", "imported-logs", None)
    assert os.environ[credentials.MLFLOW_PASSWORD_ENV] == "secret"
