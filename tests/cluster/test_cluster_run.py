"""The cluster path of docs/cluster.md on one machine: a real `mlflow server` on 127.0.0.1 (sqlite runs, a local
artifact folder), a real `ray start --head` whose dashboard listens on 127.0.0.1, and a sweep submitted to
it with `ray job submit` that reads its stores from an env file with the names cluster.yaml writes. The
sweep's runs and artifacts reach MLflow over HTTP only, and its Tune state goes to a `file://` results URI
while the trials' run directories stay on the node's disk.

Every process started here is stopped here. `ray stop` would stop every Ray instance of the user (other
test sessions' included), so the head runs as `ray start --block` in a session of its own, with its own
temp dir, ports and auth token, and is stopped by signalling that one process; every process it started
carries a marker in its environment, which the teardown checks is gone.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml
from paths import REPO
from sweeping import FAKE

from sweep.cli import main as sweep_main
from sweep.inputs.plan import PLAN_FILE, load_plan
from sweep.stores import results_dir, tracking

pytestmark = pytest.mark.slow  # starts Ray or torchrun processes

MARKER_ENV = "GPT_SWEEP_TEST_PROCESS"
# The `ray` and `mlflow` commands of this interpreter, whatever is first on PATH.
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
MLFLOW = [sys.executable, "-m", "mlflow"]
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marked_processes(marker: str) -> list[str]:
    """Processes (of any session) whose environment carries `MARKER_ENV=marker`."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name}: {cmdline[:200]}")
        except OSError:
            continue
    return found


def wait_until_up(url: str, proc: subprocess.Popen, log: Path, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{url} did not come up (exit code {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.5)


def stop_session(proc: subprocess.Popen, marker: str, grace_s: float = 30.0) -> None:
    """SIGTERM the session's first process and let it stop its children; SIGKILL whatever is left."""
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while (proc.poll() is None or marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = marked_processes(marker)
    for line in left:
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)
    assert not left, "still running after SIGTERM:\n" + "\n".join(left)


def start_marked(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen, str]:
    marker = uuid.uuid4().hex
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env={**env, MARKER_ENV: marker}, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, marker


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` as on the head node: runs in a database, artifacts proxied into a folder."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [*MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{folder}/mlflow.db", "--artifacts-destination", str(folder / "artifacts")]
    # The server's job runner (MLflow's own background jobs) starts a dozen processes the sweep never uses.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc, marker = start_marked(cmd, folder / "server.log", env, folder)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", proc, folder / "server.log")
        yield f"http://127.0.0.1:{port}", folder / "artifacts"
    finally:
        stop_session(proc, marker)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A one-node Ray cluster with the job server on 127.0.0.1: (dashboard URL, env for the `ray` CLI)."""
    # Ray's socket paths must stay short: a temp dir of its own directly under the system temp folder.
    temp_dir = Path(tempfile.mkdtemp(prefix="rayh-"))
    workdir = tmp_path_factory.mktemp("ray-head")
    gcs, dashboard, agent, client = (free_port() for _ in range(4))
    # Token auth with a token of this cluster only (Ray would otherwise pick up ~/.ray/auth_token), and the
    # checkout on the path as if the package were installed on the node.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex, "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [*RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=2",
           "--num-gpus=0", "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
           f"--dashboard-agent-listen-port={agent}", f"--ray-client-server-port={client}", f"--temp-dir={temp_dir}",
           "--disable-usage-stats"]
    proc, marker = start_marked(cmd, workdir / "ray-start.log", env, workdir)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_until_up(f"{url}/api/version", proc, workdir / "ray-start.log",
                      headers={"Authorization": f"Bearer {env['RAY_AUTH_TOKEN']}"})
        yield url, env
    finally:
        try:
            stop_session(proc, marker)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


def test_sweep_submitted_as_a_ray_job_lands_in_the_mlflow_server(mlflow_server, ray_head, tmp_path):
    server_uri, server_artifacts = mlflow_server
    dashboard, ray_env = ray_head
    name = f"jobsweep-{uuid.uuid4().hex[:6]}"
    results = (tmp_path / "shared" / "tune").as_uri()
    node_local = results_dir.local_folder(results, name)
    space = tmp_path / "quality.yaml"
    space.write_text(yaml.safe_dump({
        "name": "quality", "metric": "val_loss", "mode": "min", "preset": "tiny",
        "params": {"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}},
        "points_to_evaluate": [{"fake.quality": 0.0}, {"fake.quality": 1.0}]}))
    # The names of the env file cluster.yaml writes on the head, sourced as docs/cluster.md's `ray job submit` does.
    env_file = tmp_path / "gpt-sweep.env"
    env_file.write_text(f"export SWEEP_MLFLOW_URI={server_uri}\n"
                        f"export SWEEP_STORAGE=sqlite:///{tmp_path}/optuna.db\n"
                        f"export SWEEP_RESULTS_DIR={results}\n")
    sweep_cmd = shlex.join([sys.executable, "-m", "sweep", "run", "--address", "auto", "--gpus-per-trial", "0",
                            "--space", str(space), "--trials", "3", "--concurrency", "2", "--name", name,
                            "--trainer-cmd", f"{sys.executable} {FAKE}"])
    stores = '--mlflow-uri "$SWEEP_MLFLOW_URI" --storage "$SWEEP_STORAGE" --results-dir "$SWEEP_RESULTS_DIR"'
    try:
        submitted = subprocess.run(
            [*RAY, "job", "submit", "--address", dashboard, "--submission-id", name, "--",
             "bash", "-c", f". {shlex.quote(str(env_file))} && {sweep_cmd} {stores}"],
            env=ray_env, capture_output=True, text=True, timeout=300)
        assert submitted.returncode == 0, submitted.stdout[-4000:] + submitted.stderr[-2000:]
        assert "best: trial_0000 val_loss=" in submitted.stdout     # the driver's summary, streamed back

        client = tracking.client(server_uri)
        experiment = client.get_experiment_by_name(name)   # --name names the experiment too
        # The server's page of the sweep's trials: the saved view the URL names, in model-training mode.
        assert f"MLflow UI: {tracking.ui_url(server_uri, experiment.experiment_id, name)}" in submitted.stdout
        query = urllib.parse.urlencode({"experiment_name": name})
        with urllib.request.urlopen(f"{server_uri}/api/2.0/mlflow/experiments/get-by-name?{query}", timeout=10) as r:
            tags = {t["key"]: t["value"] for t in json.load(r)["experiment"].get("tags", [])}
        assert (tags["mlflow.experimentKind"] == "custom_model_development"
                and json.loads(tags[tracking.SAVED_VIEW_PREFIX + name])["name"] == f"sweep {name}")
        (parent,) = client.search_runs([experiment.experiment_id], f"tags.`{tracking.TAG_SWEEP}` = '{name}' and "
                                                                   f"tags.`{tracking.TAG_ROLE}` = 'sweep'")
        assert parent.info.status == "FINISHED"
        assert parent.data.tags[tracking.TAG_RAY_ADDRESS] == "auto"
        children = tracking.child_runs(client, experiment.experiment_id, parent.info.run_id)
        assert sorted(int(r.data.tags[tracking.TAG_TRIAL_NUMBER]) for r in children) == [0, 1, 2]
        for run in children:
            assert run.info.status == "FINISHED"
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
            assert steps == [10, 20, 30, 40]
            # Artifacts went through the server (a trial on a worker node cannot write the head's disk).
            assert run.info.artifact_uri.startswith("mlflow-artifacts:")
            listed = {a.path for a in client.list_artifacts(run.info.run_id)}
            assert {"events.jsonl", "config.yaml", "output.log"} <= listed
            stored = server_artifacts / run.info.artifact_uri.removeprefix("mlflow-artifacts:/")
            assert (stored / "events.jsonl").is_file()
        best = min(children, key=lambda r: r.data.metrics["final_val_loss"])
        assert parent.data.metrics[tracking.BEST_METRIC] == best.data.metrics["final_val_loss"]

        # Tune's state and the plan are in the results URI; the trials' run directories are not.
        shared = tmp_path / "shared" / "tune" / name
        assert (shared / PLAN_FILE).is_file() and list(shared.glob("experiment_state-*.json"))
        assert not list(shared.rglob("events.jsonl"))
        plan = load_plan(results, name)
        assert plan.results_dir == results and plan.mlflow_uri == server_uri
        assert sorted(p.name for p in plan.run_root.iterdir()) == ["trial_0000", "trial_0001", "trial_0002"]
        assert plan.run_root.parent == node_local

        # docs/cluster.md's next step: compare the sweep from its results URI, over HTTP.
        assert sweep_main(["compare", name, "--results-dir", results, "--out", str(tmp_path / "cmp")]) == 0
        assert (tmp_path / "cmp" / "trials.txt").read_text().startswith(f"sweep {name}: 3 trials")
        assert {a.path for a in client.list_artifacts(parent.info.run_id, "compare")} >= {"compare/trials.txt"}
    finally:
        shutil.rmtree(node_local, ignore_errors=True)


def test_a_results_uri_pyarrow_cannot_open_exits_2_naming_the_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = sweep_main(["run", "--results-dir", "nosuchfs://bucket/tune", "--trainer-cmd", f"{sys.executable} {FAKE}",
                     "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--results-dir" in err and "nosuchfs://bucket/tune" in err
    assert sweep_main(["run", "--results-dir", "s3://", "--trainer-cmd", f"{sys.executable} {FAKE}"]) == 2
    assert "names no bucket or folder" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
