"""`sweep list`: the sweeps an MLflow store holds, with their state, trial counts, best objective and start.

It reads the sweeps' parent runs (tag `sweep.role` = sweep) in every experiment, and their child runs.
A local sqlite store that does not exist is an error, not a new empty store, and so is a file that is not
an MLflow store (sweep.inputs.store_files).
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

from sweep.errors import EXIT_OK, InputError
from sweep.inputs.store_files import MLFLOW, check_store_file
from sweep.report import table
from sweep.report.table import fmt
from sweep.report.trial_rows import from_run
from sweep.stores import tracking, urls
from trainer.protocol import FINAL_STATUSES

HELP = "list the sweeps of an MLflow store: state, trial counts, best objective, start time"
# `done`: the trials that trained to their end, whatever their final status (ok, diverged, wallclock_cap),
# as the live view counts them.
COUNTED = ("done", "pruned", "failed", "running")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mlflow-uri", default=urls.DEFAULT_MLFLOW_URI,
                   help=f"MLflow tracking URI (default {urls.DEFAULT_MLFLOW_URI})")


def sweeps(uri: str) -> list[dict]:
    """One row per sweep, newest first."""
    client = tracking.client(uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return []
    ids = list(experiments)
    parents = tracking.search_all(client, ids, f"tags.`{tracking.TAG_ROLE}` = 'sweep'",
                                  order_by=["attributes.start_time DESC"])
    rows = []
    for run in parents:
        children = [from_run(c, []) for c in tracking.child_runs(client, run.info.experiment_id, run.info.run_id)]
        states = Counter(c.status for c in children)
        counts = {"done": sum(states[s] for s in FINAL_STATUSES), "pruned": states["pruned"],
                  "failed": states["failed"], "running": states["running"]}
        rows.append({"sweep": run.info.run_name, "experiment": experiments.get(run.info.experiment_id, "?"),
                     "state": run.info.status.lower(), "trials": len(children), **counts,
                     "metric": run.data.tags.get(tracking.TAG_METRIC, "objective"),
                     "best": run.data.metrics.get(tracking.BEST_METRIC),
                     "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(run.info.start_time / 1000))})
    return rows


def render(rows: list[dict]) -> str:
    header = ["sweep", "experiment", "state", "trials", *COUNTED, "best", "started"]
    lines = [header] + [[r["sweep"], r["experiment"], r["state"], str(r["trials"]), *(str(r[k]) for k in COUNTED),
                         f"{r['metric']} {fmt(r['best'])}" if r["best"] is not None else "-", r["started"]]
                        for r in rows]
    return table.render(lines, text_columns=3)


def main(args: argparse.Namespace) -> int:
    uri = urls.absolute(args.mlflow_uri)
    db = urls.sqlite_path(uri)
    if db is not None:
        if not db.exists():
            raise InputError("--mlflow-uri", f"no MLflow store at {db}")
        check_store_file(db, MLFLOW, "--mlflow-uri")
    rows = sweeps(uri)
    print(render(rows) if rows else f"no sweeps in {uri}")
    return EXIT_OK
