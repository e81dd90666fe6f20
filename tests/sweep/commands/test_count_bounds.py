"""Counts have an upper bound: a count no sweep could run (`--trials 99999999999999999999`) is exit 2 naming
the flag and its bound, at once, before anything is written, rather than a driver that sizes things by it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from paths import REPO
from sweeping import PLAIN_FAKE, write_space

from sweep.cli import main as sweep_main
from sweep.inputs import resources


def test_an_absurd_trial_count_exits_2_at_once(tmp_path):
    space = write_space(tmp_path, name="huge", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}})
    done = subprocess.run([sys.executable, "-m", "sweep", "run", "--space", str(space), "--trainer-cmd", PLAIN_FAKE,
                           "--trials", "99999999999999999999"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 2, done.stderr
    assert (f"sweep run: error: --trials: must be at least 1 and at most {resources.MAX_TRIALS}, "
            f"got 99999999999999999999") in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.yaml"]


@pytest.mark.parametrize(("flags", "bound"), [
    (["--trials", str(resources.MAX_TRIALS + 1)], ("--trials", resources.MAX_TRIALS)),
    (["--concurrency", str(resources.MAX_CONCURRENT + 1)], ("--concurrency", resources.MAX_CONCURRENT)),
    (["--max-failures", str(resources.MAX_FAILURES + 1)], ("--max-failures", resources.MAX_FAILURES)),
    (["--confirm", str(resources.MAX_CONFIRMED + 1)], ("--confirm", resources.MAX_CONFIRMED)),
    (["--confirm", "2", "--confirm-seeds", str(resources.MAX_SEEDS + 1)], ("--confirm-seeds", resources.MAX_SEEDS)),
    (["--cpus-per-trial", str(resources.MAX_PER_TRIAL + 1)], ("--cpus-per-trial", resources.MAX_PER_TRIAL)),
    (["--nproc-per-trial", str(resources.MAX_PER_TRIAL + 1)], ("--nproc-per-trial", resources.MAX_PER_TRIAL)),
    (["--gpus-per-trial", str(resources.MAX_PER_TRIAL + 1)], ("--gpus-per-trial", resources.MAX_PER_TRIAL)),
])
def test_sweep_run_bounds_every_count(workdir, capsys, flags, bound):
    space = write_space(workdir, name="bounded", metric="val_loss",
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}})
    assert sweep_main(["run", "--space", str(space), "--trainer-cmd", PLAIN_FAKE, *flags]) == 2
    flag, most = bound
    assert f"sweep run: error: {flag}: must be at least" in (err := capsys.readouterr().err)
    assert f"and at most {most}, got {most + 1}" in err
    assert sorted(p.name for p in workdir.iterdir()) == ["bounded.yaml"]


def test_a_space_file_and_verify_bound_their_counts_too(workdir, capsys):
    space = write_space(workdir, name="bounded", metric="val_loss", confirm={"top": resources.MAX_CONFIRMED + 1},
                        params={"fake.quality": {"type": "float", "low": 0.0, "high": 1.0}})
    assert sweep_main(["run", "--space", str(space), "--trainer-cmd", PLAIN_FAKE]) == 2
    assert f"confirm.top: must be at least 1 and at most {resources.MAX_CONFIRMED}" in capsys.readouterr().err
    config = workdir / "config.yaml"
    config.write_text("train:\n  iterations: 2\n")
    assert sweep_main(["verify", "--config", str(config), "--seeds", str(resources.MAX_SEEDS + 1)]) == 2
    assert f"--seeds: must be at least 2 and at most {resources.MAX_SEEDS}" in capsys.readouterr().err
