"""`python -m trainer fp8 calibrate`: the proposal rule on a known distribution, and the command end to end."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from paths import REPO

from sweep.inputs.space import check_with_trainer, load_space
from trainer.fp8.calibrate import PR175, Probe, propose
from trainer.fp8.op import FORMATS
from trainer.fp8.ranges import RangeStats, figures_of

# |N(0, 1)|'s 99.9th percentile: the two-sided 0.999 quantile of the standard normal.
HALF_NORMAL_P999 = 3.2905267


def test_proposal_puts_the_percentile_where_asked():
    gen = torch.Generator().manual_seed(0)
    sigma = {"x": 1.0, "w": 0.02, "g": 3e-3}
    given = (0.3, 0.004, 0.002)
    probe = Probe()
    for step in (1, 2):
        stats = RangeStats(torch.device("cpu"), seed=step)
        for (kind, s), scale in zip(sigma.items(), given):
            scaled = torch.randn(1 << 18, generator=gen) * s / scale
            stats(kind, scaled, scaled.to(FORMATS[kind]))
        probe.record(step, given, stats, stats.figures())
    targets = {"x": 100.0, "w": 200.0, "g": 40.0}
    proposal = propose(probe, targets)
    for kind, s in sigma.items():
        assert proposal[kind] == pytest.approx(s * HALF_NORMAL_P999 / targets[kind], rel=0.03), kind
        fmax = torch.finfo(FORMATS[kind]).max
        at_proposal = figures_of(torch.randn(1 << 20, generator=gen).abs() * s / proposal[kind], kind)
        assert at_proposal["p999_ratio"] == pytest.approx(targets[kind] / fmax, rel=0.03), kind
        assert probe.worst_at(kind, proposal[kind])["p999_ratio"] == pytest.approx(targets[kind] / fmax, rel=0.03)


def _calibrate(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", "fp8", "calibrate", "--run-dir", str(tmp_path / "probe"),
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_calibrate_prints_a_proposal_and_writes_a_space_that_sweeps(tmp_path):
    out = tmp_path / "space.yaml"
    proc = _calibrate(tmp_path, "--preset", "tiny", "--steps", "4", "--points", "2", "--out", str(out),
                      "train.seq_len=64")
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = dict(re.findall(r"(fp8\.\w+)=([0-9.e+-]+)", proc.stdout.split("proposal:")[1].splitlines()[0]))
    assert set(printed) == {"fp8.x_s", "fp8.w_s", "fp8.grad_s"}
    assert "measured" in proc.stdout and "proposed" in proc.stdout
    space = load_space(out)
    check_with_trainer(space, space.preset)
    assert space.preset == "tiny" and space.fixed == {"train.seq_len": 64, "fp8.enabled": True}
    proposal, pr175 = space.points_to_evaluate
    for key, value in printed.items():
        assert proposal[key] == pytest.approx(float(value), rel=1e-5)
    assert pr175 == {"fp8.x_s": PR175["x"], "fp8.w_s": PR175["w"], "fp8.grad_s": PR175["g"]}
    for key, param in space.params.items():
        assert param.log and param.low <= min(proposal[key], pr175[key]) and param.high >= max(proposal[key], pr175[key])
        assert param.high / param.low >= 99, key
    events = (tmp_path / "probe" / "events.jsonl").read_text()
    assert events.count('"event": "fp8"') == 3  # steps 1, 2 and 4


@pytest.mark.parametrize("args, message", [
    (["--preset", "tiny", "--x-p999", "500"], "--x-p999: must lie in (0, 448)"),
    (["--preset", "tiny", "--steps", "0"], "--steps: must be at least 1"),
    (["--out", "s.yaml"], "--out: a search space names its preset"),
    (["--preset", "tiny", "fp8.grad_s=0"], "fp8.grad_s: must be > 0"),
    (["--preset", "tiny", "fp8.bogus=1"], "fp8.bogus: unknown config key"),
])
def test_bad_input_exits_2_naming_it(tmp_path, args, message):
    proc = _calibrate(tmp_path, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not (tmp_path / "probe").exists()

