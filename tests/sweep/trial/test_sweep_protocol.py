"""The trial side of the sweep without Ray: reading events and log lines, judging a run, ending every process
its command started (also when the process that started it dies)."""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest
from paths import REPO
from sweeping import processes_with, wait_for

from sweep.inputs.objective import DIVERGED_VALUE, Objective
from sweep.report.trial_rows import TrialRow as Row
from sweep.report.trial_rows import best, best_line, leaderboard
from sweep.runlog.events import EventTail, RunState
from sweep.runlog.logparse import LiveLog
from sweep.trial.command import TORCHRUN_LOG_DIR_ENV, TrialSettings, trial_env
from sweep.trial.process import SupervisedProcess


def test_event_tail_returns_whole_lines_only(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read() == []  # the trainer has not created it yet
    with open(path, "w") as f:
        f.write(json.dumps({"event": "start", "time": 1.0}) + "\n" + '{"event": "val", "st')
        f.flush()
        assert [e["event"] for e in tail.read()] == ["start"]
        f.write('ep": 10, "val_loss": 3.5}\n')
        f.write("not json\n")
        f.flush()
        events = tail.read()
    assert events == [{"event": "val", "step": 10, "val_loss": 3.5}]
    assert tail.read() == []


def test_run_state_keeps_vals_export_final_and_error():
    run = RunState()
    for event in [{"event": "val", "step": 10, "val_loss": 4.0}, {"event": "export", "roundtrip_val_bpb": 1.3},
                  {"event": "final", "step": 20, "val_loss": 3.0, "status": "wallclock_cap"},
                  {"event": "error", "message": "boom"}]:
        run.apply(event)
    assert [v["step"] for v in run.vals] == [10]
    assert run.export["roundtrip_val_bpb"] == 1.3
    assert run.status == "wallclock_cap" and run.error == "boom"


def test_modded_nanogpt_lines_become_events():
    log = LiveLog()
    lines = [
        "import torch  # the log starts with the source code",
        "step:0/1750 val_loss:10.8258 train_time:0ms step_avg:0.04ms",
        "step:1/1750 train_time:140ms step_avg:140.12ms",
        "step:125/1750 val_loss:4.6120 train_time:17343ms step_avg:138.74ms",
    ]
    events = [e for line in lines for e in log.feed(line)]
    assert [e["event"] for e in events] == ["val", "train", "val"]
    assert events[2]["step"] == 125 and events[2]["val_loss"] == 4.612
    assert events[2]["train_time_ms"] == 17343 and events[2]["step_avg_ms"] == 138.74
    (final,) = log.finish()
    assert final["event"] == "final" and final["status"] == "ok" and final["val_loss"] == 4.612


def test_parameter_golf_lines_become_events_with_export_and_cap():
    log = LiveLog()
    lines = [
        "step:200/20000 train_loss:2.9120 train_time:11000ms step_avg:55.00ms",
        "step:13780/20000 val_loss:2.0606 val_bpb:1.2204 train_time:600038ms step_avg:43.54ms",
        "stopping_early: wallclock_cap train_time:600038ms step:13780/20000",
        "Serialized model int8+zlib: 15815847 bytes",
        "final_int8_zlib_roundtrip_exact val_loss:2.07269931 val_bpb:1.22436570",
    ]
    events = [e for line in lines for e in log.feed(line)]
    assert [e["event"] for e in events] == ["train", "val"]
    assert events[0]["train_loss"] == 2.912
    assert events[1]["val_bpb"] == 1.2204
    export, final = log.finish()
    assert export["event"] == "export"
    assert export["artifact_bytes"] == 15815847 and export["roundtrip_val_bpb"] == 1.2243657
    assert final["status"] == "wallclock_cap" and final["step"] == 13780


def test_a_nan_last_validation_is_a_divergence_and_no_validation_is_no_final():
    assert LiveLog().finish() == []
    log = LiveLog()
    log.feed("step:50/100 val_loss:nan train_time:10ms step_avg:0.20ms")
    assert log.finish()[-1]["status"] == "diverged"


def _run(*events) -> RunState:
    run = RunState()
    for e in events:
        run.apply(e)
    return run


def test_objective_values_and_penalties():
    final = {"event": "final", "step": 100, "val_loss": 3.3, "val_bpb": 1.2, "train_time_ms": 9000.0, "status": "ok"}
    ok = _run({"event": "val", "step": 50, "val_loss": 3.9, "train_time_ms": 4000.0}, final)
    assert Objective("val_loss").judge(ok) == (3.3, "final")
    assert Objective("train_time_ms").judge(ok) == (9000.0, "final")
    assert Objective("time_to_target", target=3.5).judge(ok) == (9000.0, "val")
    assert Objective("time_to_target", target=4.0).judge(ok) == (4000.0, "val")
    assert Objective("time_to_target", target=3.0).judge(ok) == (DIVERGED_VALUE, "penalty: target not reached")
    assert Objective("roundtrip_val_bpb").judge(ok) == (DIVERGED_VALUE, "penalty: no score")  # no export event
    exported = _run(final, {"event": "export", "roundtrip_val_bpb": 1.25})
    assert Objective("roundtrip_val_bpb").judge(exported) == (1.25, "export")
    named = _run(final, {"event": "export", "roundtrip_val_bpb": 1.25, "score_label": "final_int6_zstd_roundtrip"})
    assert Objective("roundtrip_val_bpb").judge(named) == (1.25, "final_int6_zstd_roundtrip")
    diverged = _run({**final, "val_loss": None, "status": "diverged"})
    assert Objective("val_loss").judge(diverged) == (DIVERGED_VALUE, "penalty: diverged")
    assert Objective("val_loss", mode="max").judge(diverged).value == -DIVERGED_VALUE
    assert Objective("val_loss", diverged_value=20.0).judge(diverged).value == 20.0
    assert Objective("val_bpb").judge(_run({**final, "val_bpb": math.nan})) == (DIVERGED_VALUE,
                                                                               "penalty: no finite val_bpb")
    assert Objective("val_bpb").intermediate({"val_loss": 4.0, "val_bpb": 1.5}) == 1.5
    assert Objective("time_to_target", target=3.0).intermediate({"val_loss": 4.0}) == 4.0
    assert Objective("val_loss").intermediate({"val_loss": None}) is None


def test_leaderboard_ranks_finished_trials_first_by_the_metric():
    rows = [Row(0, "a", "ok", 3.4, {"fp8.x_s": 0.2}), Row(1, "b", "pruned", None, {"fp8.x_s": 0.3}),
            Row(2, "c", "ok", 3.1, {"fp8.x_s": 0.1}), Row(3, "d", "failed", None, {"fp8.x_s": 0.5})]
    objective = Objective("val_loss")
    assert best(rows, objective).number == 2
    assert best(rows, Objective("val_loss", mode="max")).number == 0
    lines = leaderboard(rows, objective).splitlines()
    # no row has an objective's source or a wallclock: those columns are left out
    assert lines[0].split() == ["rank", "trial", "status", "val_loss", "fp8.x_s"]
    assert [line.split()[1] for line in lines[1:]] == ["trial_0002", "trial_0000", "trial_0001", "trial_0003"]
    assert best_line(best(rows, objective), objective) == "best: trial_0002 val_loss=3.1 (fp8.x_s=0.1)"
    assert best([Row(1, "b", "pruned", None)], objective) is None


def test_tied_trials_share_a_rank():
    rows = [Row(0, "a", "ok", 3.1), Row(1, "b", "ok", 3.0), Row(2, "c", "ok", 3.1), Row(3, "d", "failed", None),
            Row(4, "e", "ok", 3.0)]
    lines = leaderboard(rows, Objective("val_loss")).splitlines()[1:]
    assert [(line.split()[0], line.split()[1]) for line in lines] == [
        ("1", "trial_0001"), ("1", "trial_0004"), ("3", "trial_0000"), ("3", "trial_0002"), ("-", "trial_0003")]


def _sleeper(marker: str, ignore_term: bool = False) -> str:
    """A shell word: a Python process in a session of its own (as torchrun starts its ranks) that sleeps."""
    code = "import signal, time; " + ("signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else "")
    return f"setsid {sys.executable} -c '{code}time.sleep(600)' {marker}"


def _wait_exit(proc: SupervisedProcess) -> int:
    wait_for(lambda: proc.poll() is not None, 30, "the supervised command to end")
    return proc.poll()


@pytest.mark.parametrize("script, code", [("exit 3", 3), ("kill -9 $$", -signal.SIGKILL), ("exit 0", 0)])
def test_supervised_process_reports_the_commands_exit(tmp_path, script, code):
    assert _wait_exit(SupervisedProcess(["bash", "-c", script], tmp_path / "out.log")) == code


def test_processes_left_behind_by_a_finished_command_are_ended(tmp_path):
    marker = f"leftover-{uuid.uuid4().hex[:8]}"
    proc = SupervisedProcess(["bash", "-c", f"{_sleeper(marker)} & sleep 0.5; exit 0"], tmp_path / "out.log")
    assert _wait_exit(proc) == 0
    assert processes_with(marker) == []


def test_kill_ends_the_whole_tree_even_in_other_sessions_and_ignoring_sigterm(tmp_path):
    marker = f"treekill-{uuid.uuid4().hex[:8]}"
    proc = SupervisedProcess(["bash", "-c", f"trap '' TERM; {_sleeper(marker, ignore_term=True)} & sleep 600"],
                             tmp_path / "out.log")
    wait_for(lambda: len(processes_with(marker)) == 3, 20, "the supervisor, bash and the escaped sleeper")
    proc.kill()
    assert proc.poll() == -signal.SIGTERM
    assert processes_with(marker) == []


def test_tree_dies_when_the_trial_process_is_sigkilled(tmp_path):
    # The parent starts a command whose child escapes into a session of its own, then is SIGKILLed, as Ray
    # kills a trial's worker: no cleanup code of the parent runs.
    marker = f"orphan-{uuid.uuid4().hex[:8]}"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO)!r})
        from sweep.trial.process import SupervisedProcess
        SupervisedProcess(["bash", "-c", {f"{_sleeper(marker)} & sleep 600"!r}], Path({str(tmp_path / 'out.log')!r}))
        time.sleep(600)
    """)])
    try:
        # The parent (its script names the marker), the supervisor, bash and the escaped sleeper.
        wait_for(lambda: len(processes_with(marker)) == 4, 20, "the parent to start its command")
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: not processes_with(marker), 10, "the command's tree to end with its trial")


@pytest.mark.parametrize("value", [1.0, 0.0, 1e-5, 3])
def test_final_metrics_are_floats_under_their_mlflow_names(value):
    from sweep.stores.child_run import final_metrics

    run = _run({"event": "final", "step": 30, "val_loss": value, "val_bpb": None, "peak_mem_mib": 12,
                "status": "ok"}, {"event": "export", "artifact_bytes": 1234, "roundtrip_val_bpb": 1.5})
    metrics = final_metrics(run, objective=value, wallclock_s=7200.0, gpus=8)
    assert metrics["final_val_loss"] == float(value) and "final_val_bpb" not in metrics
    assert metrics["gpu_hours"] == 16.0 and metrics["wallclock_s"] == 7200.0
    assert metrics["artifact_bytes"] == 1234.0 and metrics["roundtrip_val_bpb"] == 1.5
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


@pytest.mark.slow  # starts torchrun
def test_a_trials_torchrun_leaves_nothing_in_the_temp_folder(tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.delenv(TORCHRUN_LOG_DIR_ENV, raising=False)
    script = tmp_path / "train.py"
    script.write_text("print('trained')\n")
    settings = TrialSettings(sweep="s", preset="tiny", objective=Objective("val_loss"), run_root=str(tmp_path),
                             cwd=str(tmp_path), mlflow_uri="", experiment_id="", parent_run_id="")
    env = trial_env(settings, tmp_path / "trial_0000", {})
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]

    def run(environment: dict) -> list[str]:
        done = subprocess.run(torchrun, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.count("trained") == 2, done.stderr
        return sorted(p.name for p in temp.iterdir())

    assert run(env) == []
    # torchrun left to itself makes a torchelastic_* folder there, one per run, and leaves it
    bare = {k: v for k, v in env.items() if k != TORCHRUN_LOG_DIR_ENV}
    assert [name.startswith("torchelastic_") for name in run(bare)] == [True]
