"""Service overhead per trial, and the MLflow logging cost per reported step.

    python bench/bench_overhead.py [--trials M] [--concurrency K] [--steps N] [--step-s S] [--reports R]

1. The same M short runs, K at a time, launched two ways: bare (`torchrun ... tests/fake_trainer.py`
   from a thread pool) and as a sweep (`sweep run --trainer-cmd` on a local Ray instance, real sqlite
   MLflow and Optuna stores). Overhead per trial = (sweep wall time - bare wall time) x K / M: the
   trial-seconds the service adds to each run. Ray start-up and the stores' creation happen once per
   sweep and are reported on their own. Target: <= 2 s per trial.
2. MLflow logging cost: R reports, each one `log_batch` of what a trial sends per validation (the train
   events since the last one plus the val event), into a sqlite store; milliseconds per report.

The runs use the fake trainer of the tests (no torch import in the ranks) so the figure is the service's,
not the model's. Prints the figures and saves bench/results/bench_overhead.json.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sweep.cli import parser as cli_parser
from sweep.stores import tracking

RESULTS = REPO / "bench" / "results"
FAKE = REPO / "tests" / "fake_trainer.py"
TARGET_S = 2.0


def trainer_cmd() -> str:
    return f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node=1 {FAKE}"


def bare(trials: int, concurrency: int, overrides: list[str], folder: Path) -> float:
    def one(i: int) -> None:
        run_dir = folder / f"bare_{i}"
        run_dir.mkdir()
        # The same thread budget a sweep gives a one-CPU trial.
        done = subprocess.run([*shlex.split(trainer_cmd()), "--run-dir", str(run_dir), *overrides],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            raise SystemExit(f"bare run {i} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(trials)))
    return time.perf_counter() - start


def swept(trials: int, concurrency: int, overrides: list[str], folder: Path) -> dict:
    import ray

    from sweep.commands.run import build_plan
    from sweep.orchestration.driver import run_sweep
    from sweep.orchestration.tuner import start_ray

    space = folder / "bench.yaml"
    space.write_text("name: bench\nmetric: val_loss\nmode: min\npreset: tiny\n"
                     "params:\n  fake.quality: {type: float, low: 0.0, high: 1.0}\n")
    mlflow_uri = f"sqlite:///{folder}/mlflow.db"
    t0 = time.perf_counter()
    tracking.client(mlflow_uri).search_experiments()
    stores_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    start_ray("")
    ray_s = time.perf_counter() - t0
    args = cli_parser().parse_args([
        "run", "--space", str(space), "--trials", str(trials), "--concurrency", str(concurrency),
        "--trainer-cmd", trainer_cmd(), "--mlflow-uri", mlflow_uri, "--results-dir", str(folder / "runs"),
        *[a for o in overrides for a in ("--set", o)]])
    plan = build_plan(args)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = run_sweep(plan)
    sweep_s = time.perf_counter() - t0
    ray.shutdown()
    if rc != 0:
        raise SystemExit(f"the sweep ended with exit code {rc}")
    client = tracking.client(mlflow_uri)
    experiment = client.get_experiment_by_name("bench")
    runs = tracking.child_runs(client, experiment.experiment_id, plan.parent_run_id)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    if len(finished) != trials:
        raise SystemExit(f"{len(finished)} of {trials} trials finished")
    return {"sweep_s": sweep_s, "ray_start_s": ray_s, "stores_create_s": stores_s,
            "trial_wallclock_s": sum(r.data.metrics["wallclock_s"] for r in finished) / trials}


def logging_cost(reports: int, train_events: int, folder: Path) -> dict:
    uri = f"sqlite:///{folder}/logging.db"
    client = tracking.client(uri)
    experiment_id = tracking.ensure_experiment(client, uri, "logging")
    run_id = client.create_run(experiment_id).info.run_id
    batch = tracking.MetricBatch(client, run_id)
    step, metrics_sent, requests = 0, 0, 0
    start = time.perf_counter()
    for _ in range(reports):
        for _ in range(train_events):
            step += 1
            batch.add({"train_loss": 3.0, "train_time_ms": 10.0 * step, "step_avg_ms": 10.0}, step)
        batch.add({"val_loss": 3.1, "val_bpb": 1.2, "train_time_ms": 10.0 * step, "step_avg_ms": 10.0}, step)
        metrics_sent += len(batch)
        requests += batch.flush()
    elapsed = time.perf_counter() - start
    return {"reports": reports, "requests": requests, "metrics_per_report": metrics_sent / reports,
            "ms_per_report": 1000 * elapsed / reports, "ms_per_metric": 1000 * elapsed / metrics_sent}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--steps", type=int, default=40, help="training steps of each fake run")
    p.add_argument("--step-s", type=float, default=0.05, help="seconds per fake step")
    p.add_argument("--reports", type=int, default=200)
    args = p.parse_args()
    overrides = [f"train.iterations={args.steps}", "train.val_every=10", f"fake.step_s={args.step_s}"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bare_s = bare(args.trials, args.concurrency, overrides, folder)
        sweep = swept(args.trials, args.concurrency, overrides, folder)
        logging = logging_cost(args.reports, 10, folder)
    per_trial = (sweep["sweep_s"] - bare_s) * args.concurrency / args.trials
    result = {
        "trials": args.trials, "concurrency": args.concurrency, "steps": args.steps, "step_s": args.step_s,
        "bare_s": bare_s, **sweep, "overhead_per_trial_s": per_trial, "ratio_sweep_to_bare": sweep["sweep_s"] / bare_s,
        "target_overhead_per_trial_s": TARGET_S, "meets_target": per_trial <= TARGET_S,
        "mlflow_logging": logging, "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    print(f"{args.trials} runs, {args.concurrency} at a time, {args.steps} steps x {args.step_s}s each")
    print(f"  bare torchrun:           {bare_s:7.2f} s")
    print(f"  sweep (run_sweep):       {sweep['sweep_s']:7.2f} s   ratio {result['ratio_sweep_to_bare']:.2f}")
    print(f"  overhead per trial:      {per_trial:7.2f} s   (target <= {TARGET_S} s)")
    print(f"  once per sweep:          Ray start {sweep['ray_start_s']:.2f} s, "
          f"MLflow store creation {sweep['stores_create_s']:.2f} s")
    print(f"  trial wallclock (mean):  {sweep['trial_wallclock_s']:7.2f} s as measured inside the trial")
    print(f"MLflow logging: {logging['ms_per_report']:.1f} ms per report "
          f"({logging['metrics_per_report']:.0f} metrics, one request), {logging['ms_per_metric']:.2f} ms per metric")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_overhead.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
