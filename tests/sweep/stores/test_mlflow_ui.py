"""The page of MLflow's UI that a sweep's last lines open, in a real browser: `mlflow ui` on the store of a
synthetic sweep, and headless Chromium (Debian's `chromium`, which .ci/run installs) loading the printed URL.
The page must be the experiment's training runs, not MLflow's GenAI pages, with one row per trial and the
objective and val_loss among the columns."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
from mlflow import MlflowClient
from sweeping import wait_for
from synthetic_sweep import make_sweep

from sweep.stores import tracking

pytestmark = pytest.mark.slow  # starts an MLflow server and a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TRIALS = 6


class _Text(HTMLParser):
    """The text a page shows: its DOM's text nodes, outside scripts and styles."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.parts.append(data.strip())


def page_text(url: str, profile: Path) -> str:
    """The page's text once its scripts have run (`--virtual-time-budget` lets the app's timers and
    requests finish before the DOM is dumped)."""
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           "--window-size=1600,1000", "--virtual-time-budget=30000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    parser = _Text()
    parser.feed(done.stdout)
    return "\n".join(parser.parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_ui(tmp_path):
    """A synthetic sweep's store served by `mlflow ui` on 127.0.0.1 (one worker, no job runner: a test needs
    neither); yields (the sweep's plan, the server's base URL)."""
    plan = make_sweep(tmp_path, "uisweep", TRIALS)
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(tmp_path / "mlflow-ui.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", plan.mlflow_uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert server.poll() is None, (tmp_path / "mlflow-ui.log").read_text()[-2000:]
        try:
            return urllib.request.urlopen(f"{base}/health", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, 120, "mlflow ui to answer")
        yield plan, base
    finally:
        os.killpg(server.pid, signal.SIGTERM)   # its own session: the server and the workers it started
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs Debian's chromium "
                                               "package: apt-get install -y chromium)")
def test_the_printed_url_opens_the_sweeps_trials_in_the_runs_table(mlflow_ui, tmp_path):
    plan, base = mlflow_ui
    client = MlflowClient(plan.mlflow_uri)
    experiment_id = client.get_experiment_by_name(plan.experiment).experiment_id
    command, url_line = tracking.ui_lines(plan.mlflow_uri, experiment_id, plan.name)
    assert command == f"MLflow UI: mlflow ui --backend-store-uri {plan.mlflow_uri}"
    printed = re.fullmatch(r"  then open (\S+)", url_line).group(1)
    assert printed.startswith(f"{tracking.UI_LOCAL}/#/experiments/{experiment_id}/runs?")
    text = page_text(printed.replace(tracking.UI_LOCAL, base), tmp_path / "profile")

    lines = text.splitlines()
    # The runs page in model-training mode with the sweep's saved view, not the GenAI overview the experiment
    # opens on by default (its sidebar: Sessions, Judges, Agent versions; its page: Overview, Traces 0)
    assert lines[0] == f"Runs - Experiment {experiment_id} - MLflow", lines[:3]
    assert f"sweep {plan.name}" in lines and "Sort: objective" in lines
    assert not {"Overview", "Sessions", "Judges", "Agent versions"} & set(lines)
    # one row per trial, unfolded from the parent run, best first, with the objective, val_loss and the swept
    # values as columns
    runs = tracking.child_runs(client, experiment_id, plan.parent_run_id)
    best_first = [r.info.run_name for r in sorted(runs, key=lambda r: r.data.metrics[tracking.OBJECTIVE_METRIC])]
    assert sorted(best_first) == [f"trial_{n:04d}" for n in range(TRIALS)]
    assert [line for line in lines if line.startswith("trial_")] == best_first
    assert {"objective", "val_loss", "fp8.x_s", "fp8.w_s", "fp8.grad_s", "sweep.status"} <= set(lines)
    assert lines[lines.index("matching runs") - 1] == str(TRIALS)
