"""The MLflow password of a sweep against a server behind basic auth reaches its trials and nothing else that
other users of the machine can read: no process's command line (Ray's workers included), no file of Ray's session
folder (its logs), no file of the sweep's folders or stores besides the driver's 0600 password file, which is
gone once the driver ends. The driver is a real `sweep run` process with its own local Ray instance (in a temp
folder of its own, so its session folder is known), the server a real `mlflow server` behind a basic-auth proxy.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from auth_mlflow import PASSWORD, USER
from paths import REPO
from sweeping import PLAIN_FAKE, processes_with, sweep_runs, write_space

from sweep.inputs.plan import load_plan
from sweep.stores import credentials, tracking

pytestmark = pytest.mark.slow  # starts Ray


def holding(root: Path, secret: bytes) -> dict[Path, int]:
    """Every file under `root` that holds `secret`, with how many times."""
    found = {}
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                count = path.read_bytes().count(secret)
                if count:
                    found[path] = count
        except OSError:
            continue
    return found


def command_lines_with(secret: str) -> dict[int, str]:
    """What `ps -eo args` would show holding `secret`, read from /proc directly: ps takes long enough to miss
    the moment a Ray worker's setup process lives."""
    return {int(line.partition(":")[0]): line.partition(": ")[2] for line in processes_with(secret)}


def watch_sweep(folder: Path, args: list[str], env: dict[str, str], ray_tmp: Path, password_file: Path):
    """Run `sweep ARGS` in `folder` and watch it until it ends: (driver, its output, the command lines holding
    the password other than the driver's own, the files under `folder` holding it while it ran, the modes
    the password file had)."""
    driver = subprocess.Popen([sys.executable, "-m", "sweep", *args], cwd=folder, text=True,
                              env={**env, "PYTHONPATH": str(REPO), "RAY_TMPDIR": str(ray_tmp)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines, files, modes = {}, set(), set()

    def sample_command_lines() -> None:  # as often as ps runs: a worker's setup process lives a moment only
        while driver.poll() is None:
            lines.update({pid: a for pid, a in command_lines_with(PASSWORD).items() if pid != driver.pid})
            time.sleep(0.05)

    sampler = threading.Thread(target=sample_command_lines)
    sampler.start()
    deadline = time.monotonic() + 300
    while driver.poll() is None and time.monotonic() < deadline:
        files.update(holding(folder, PASSWORD.encode()))
        try:
            modes.add(stat.S_IMODE(password_file.stat().st_mode))
        except FileNotFoundError:
            pass
        time.sleep(1.0)
    if driver.poll() is None:
        driver.kill()
    out = driver.communicate()[0]
    sampler.join()
    return driver, out, lines, files, modes


@pytest.mark.parametrize("given", ["environment", "url"])
def test_the_mlflow_password_reaches_the_trials_and_no_other_user(authed_mlflow, tmp_path, given):
    name = f"authed-{given}"
    space = write_space(tmp_path, name=name, metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}},
                        fixed={"fake.step_s": 0.1, "train.iterations": 40})
    env = {k: v for k, v in os.environ.items() if k not in (*credentials.SECRET_ENV, credentials.MLFLOW_USERNAME_ENV)}
    if given == "environment":
        env[credentials.MLFLOW_PASSWORD_ENV] = PASSWORD
        uri = authed_mlflow.uri(USER)
    else:
        uri = authed_mlflow.uri(f"{USER}:{PASSWORD}")
    # Ray's socket paths must stay short: its temp folder directly under the system's.
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs-"))
    try:
        driver, out, lines, files, modes = watch_sweep(
            tmp_path, ["run", "--mlflow-uri", uri, "--space", str(space), "--trials", "2", "--concurrency", "2",
                       "--name", name, "--trainer-cmd", PLAIN_FAKE],
            env, ray_tmp, tmp_path / "runs" / name / credentials.PASSWORD_FILE)
        sessions = list((ray_tmp / "ray").glob("session_2*"))
        in_ray = holding(ray_tmp, PASSWORD.encode())
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(f"{given}: password in {len(lines)} other command lines, {sum(in_ray.values())} times in "
          f"{len(in_ray)} files of Ray's session folder")
    assert driver.returncode == 0, out
    assert PASSWORD not in out
    # The trials reached the server through the proxy, which takes nobody without the password.
    _, _, children = sweep_runs({"mlflow": authed_mlflow.upstream}, name)
    assert sorted(children) == [0, 1]
    assert all(r.info.status == "FINISHED" and tracking.OBJECTIVE_METRIC in r.data.metrics for r in children.values())
    assert len(sessions) == 1, sessions
    assert in_ray == {}
    assert lines == {}
    plan = load_plan(tmp_path / "runs", name)
    assert files == {plan.sweep_dir / credentials.PASSWORD_FILE}
    assert modes == {0o600}
    assert holding(tmp_path, PASSWORD.encode()) == {}
    assert holding(authed_mlflow.folder, PASSWORD.encode()) == {}
