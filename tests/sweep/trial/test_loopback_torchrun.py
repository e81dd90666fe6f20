"""A trial's torchrun listens on 127.0.0.1 only: the agent's two stores and the ranks' sockets."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sockets import LOOPBACK, listening_sockets
from sweeping import wait_for

from sweep.trial.loopback_torchrun import MODULE, loopback
from sweep.trial.process import package_pythonpath
from sweep.trial.supervisor import descendants

pytestmark = pytest.mark.slow  # starts torchrun processes

RANK = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import torch.distributed as dist
    dist.init_process_group("gloo")
    Path(sys.argv[1], f"ready{dist.get_rank()}").touch()
    while not Path(sys.argv[1], "go").exists():
        time.sleep(0.05)
    dist.barrier()
    dist.destroy_process_group()
""")


def test_a_one_node_torchrun_of_this_environment_goes_through_the_loopback_launcher():
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    assert loopback([torchrun, "--standalone", "--nproc_per_node=8", "train_gpt.py"]) == \
        [sys.executable, "-m", MODULE, "--standalone", "--nproc_per_node=8", "train_gpt.py"]
    assert loopback([sys.executable, "-m", "torch.distributed.run", "--standalone", "x.py"]) == \
        [sys.executable, "-m", MODULE, "--standalone", "x.py"]
    # A multi-node launch, a plain script, and a torchrun of another environment are left as they are.
    for argv in ([torchrun, "--nnodes=2", "--rdzv-endpoint=h:29400", "x.py"], [sys.executable, "x.py"],
                 ["/elsewhere/bin/torchrun", "--standalone", "x.py"]):
        assert loopback(argv) == argv
    assert shutil.which(torchrun) is not None


def test_every_port_of_a_two_rank_trial_listens_on_loopback_only(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    proc = subprocess.Popen(loopback([str(Path(sys.executable).with_name("torchrun")), "--standalone",
                                      "--nproc_per_node=2", str(script), str(tmp_path)]),
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": package_pythonpath(),
                                 "PET_LOG_DIR": "/dev/null"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: (tmp_path / "ready0").exists() and (tmp_path / "ready1").exists(), 120,
                 "both ranks to join the process group")
        sockets = listening_sockets([proc.pid, *descendants(proc.pid)])
        (tmp_path / "go").touch()
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    # The agent's rendezvous store and the store the ranks share, and each rank's gloo listener.
    ports = [s for socks in sockets.values() for s in socks]
    assert len(sockets) == 3 and len(ports) >= 4, sockets
    assert all(address in LOOPBACK for address, _ in ports), sockets
