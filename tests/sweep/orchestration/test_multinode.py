"""Whole-node trials on a multi-node Ray cluster simulated on one machine (ray.cluster_utils.Cluster).

The head takes no trials; two nodes declare 8 logical GPUs each, with ids 0-7 on one and 8-15 on the
other (as a raylet takes them from CUDA_VISIBLE_DEVICES), so the ids a trial saw tell its node apart.
Every trial reserves a whole node, so a sweep of 3 trials that Tune may run 3 at once runs at most 2 at
once, each alone on its node, and each torchrun sees exactly its node's 8 GPU ids.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from paths import SUPPORT

from sweep.cli import main as sweep_main
from sweep.inputs.plan import load_plan
from sweep.stores import tracking

pytestmark = pytest.mark.slow  # starts Ray or torchrun processes

PROBE = SUPPORT / "node_probe.py"
NODE_GPU_IDS = ("0,1,2,3,4,5,6,7", "8,9,10,11,12,13,14,15")


@pytest.fixture
def two_gpu_nodes(monkeypatch):
    """The cluster and {worker node id: its GPU ids}."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0})
    gpu_ids = {}
    for ids in NODE_GPU_IDS:
        with monkeypatch.context() as m:
            m.setenv("CUDA_VISIBLE_DEVICES", ids)   # read by the node's raylet when it starts
            node = cluster.add_node(num_cpus=2, num_gpus=8)
        gpu_ids[node.node_id] = set(ids.split(","))
    cluster.wait_for_nodes()
    yield cluster, gpu_ids
    ray.shutdown()
    cluster.shutdown()


def test_each_trial_gets_a_whole_node_and_its_gpu_ids(two_gpu_nodes, tmp_path, capsys):
    cluster, gpu_ids = two_gpu_nodes
    cmd = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node=2 {PROBE}"
    # Tune may keep 3 trials going: only the nodes' GPUs hold the sweep to 2 at once.
    rc = sweep_main(["run", "--address", cluster.address, "--trials", "3", "--concurrency", "3",
                     "--gpus-per-trial", "8", "--cpus-per-trial", "1", "--trainer-cmd", cmd, "--name", "multi",
                     "--mlflow-uri", f"sqlite:///{tmp_path}/mlflow.db", "--storage", f"sqlite:///{tmp_path}/o.db",
                     "--results-dir", str(tmp_path / "runs")])
    assert rc == 0, capsys.readouterr().out

    plan = load_plan(str(tmp_path / "runs"), "multi")
    client = tracking.client(plan.mlflow_uri)
    exp = client.get_experiment_by_name(plan.experiment)
    children = tracking.child_runs(client, exp.experiment_id, plan.parent_run_id)
    assert len(children) == 3
    spans = []
    for run in children:
        node = run.data.tags[tracking.TAG_NODE]
        assert node in gpu_ids                        # never the head
        number = int(run.data.tags[tracking.TAG_TRIAL_NUMBER])
        ranks = [json.loads(p.read_text()) for p in sorted((plan.run_root / f"trial_{number:04d}").glob("rank*.json"))]
        assert len(ranks) == 2
        for seen in ranks:
            ids = seen["cuda_visible_devices"].split(",")
            assert len(ids) == 8 and set(ids) == gpu_ids[node]
        assert run.data.tags[tracking.TAG_VISIBLE_GPUS] == ranks[0]["cuda_visible_devices"]
        spans.append((min(r["start"] for r in ranks), max(r["end"] for r in ranks), node))
    for i, (start, end, node) in enumerate(spans):
        overlapping = [other for j, other in enumerate(spans) if j != i and other[0] < end and start < other[1]]
        assert len(overlapping) <= 1                  # at most 2 trials at once
        assert all(other[2] != node for other in overlapping)  # each alone on its node
    assert any(a[0] < b[1] and b[0] < a[1] for a in spans for b in spans if a is not b)  # they did run in parallel


def test_trainer_falls_back_to_cpu_with_gpu_ids_but_no_cuda(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
    out = subprocess.run([sys.executable, "-m", "trainer", "--preset", "tiny", "--run-dir", str(tmp_path / "r"),
                          "device=auto", "train.iterations=2", "train.val_every=0", "train.val_tokens=4096",
                          "train.val_batch_tokens=4096"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    start = json.loads((tmp_path / "r" / "events.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["device"] == "cpu"
