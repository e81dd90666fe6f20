"""bench/chaos.py end to end on a two-trial sweep with one fault: seed 0 draws a SIGKILL of the driver, so the
campaign resumes the sweep and counts each trial once, from the stores."""
import json
import os
import subprocess
import sys

import pytest
from paths import REPO

pytestmark = pytest.mark.slow  # a sweep, its resume, Ray and torchrun processes

BENCH = REPO / "bench" / "chaos.py"


def test_a_sigkilled_driver_is_resumed_and_every_trial_counted_once(tmp_path):
    out = tmp_path / "chaos.json"
    done = subprocess.run([sys.executable, str(BENCH), "--trials", "2", "--faults", "1", "--seed", "0", "--gap", "1", "2",
                           "--iterations", "100", "--timeout", "600", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert done.stdout.splitlines()[-1] == ("chaos: 2 trials requested, 2 ended, 0 duplicates, 0 lost, 0 RUNNING, "
                                            "0 disagreements; faults: 1")
    result = json.loads(out.read_text())
    [fault] = result["faults"]
    assert fault["kind"] == "driver-kill" and fault["signal"] == "SIGKILL" and fault["trainers_gone_s"] is not None
    assert [r["exit_code"] for r in result["rounds"]] == [-9, 0]
    assert [r["command"].split(" -m sweep ")[1].split()[0] for r in result["rounds"]] == ["run", "resume"]
    assert result["counts"]["optuna_by_state"] == {"COMPLETE": 2}
    assert result["counts"]["integrity"] == {"optuna.db": "ok", "mlflow.db": "ok"}
    assert not result["processes"]["left"]
