"""Import finished (or cut-off) training logs into MLflow: one run per log, beside a sweep's trials.

Reads modded-nanogpt record logs, parameter-golf logs and our own train.log (sweep.runlog.logparse) and writes
the same metric names the trials use, so upstream records can be compared with sweep results in one
MLflow experiment. `--sweep NAME` imports into that sweep's store and experiment and tags each run with
the sweep's name, which is how `sweep compare NAME` finds its reference curves; `--experiment NAME`
imports into any experiment. A log is identified by the sha256 of its content: importing a file twice,
or the same content under two names, creates one run (per sweep, with `--sweep`). Existing runs are never
modified. Every file is read and parsed before MLflow is opened: a file named on the command line that is
not a training log is bad input (exit code 2, nothing imported), one found in a folder is reported and
skipped; a log that stops before its final step or summary is imported and tagged incomplete.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from sweep.errors import EXIT_OK, InputError
from sweep.inputs.input_files import read_input_bytes
from sweep.inputs.plan import DEFAULT_RESULTS_DIR, load_plan
from sweep.inputs.store_files import MLFLOW, check_store_file
from sweep.runlog.logparse import NotATrainingLog, ParsedLog, parse_log
from sweep.stores import credentials, tracking, urls

HELP = "import modded-nanogpt / parameter-golf / train.log files into MLflow as runs"
DEFAULT_EXPERIMENT = "imported-logs"
LOG_SUFFIXES = (".txt", ".log")

# Final values under the trials' names (sweep.stores.child_run.final_metrics), from a ParsedLog.
_FINAL_FROM_LOG = {
    "final_val_loss": "final_val_loss",
    "final_val_bpb": "final_val_bpb",
    "final_peak_mem_mib": "peak_mem_mib",
    "wallclock_s": "wallclock_s",
    "artifact_bytes": "artifact_bytes",
    "total_bytes": "total_bytes",
    "roundtrip_val_loss": "roundtrip_val_loss",
    "roundtrip_val_bpb": "roundtrip_val_bpb",
}
_PARAM_KEY = re.compile(r"^[\w\-. /]{1,250}$")
_MAX_PARAM_CHARS = 6000


@dataclass(frozen=True)
class ImportedRun:
    path: str
    run_id: str
    source: str
    complete: bool


@dataclass(frozen=True)
class Duplicate:
    path: str
    run_id: str     # the run that already holds this content


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class ImportReport:
    experiment: str
    experiment_id: str
    tracking_uri: str
    sweep: str | None = None
    imported: list[ImportedRun] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def summary(self) -> str:
        where = f"experiment {self.experiment!r}" + (f", sweep {self.sweep!r}" if self.sweep else "")
        lines = [f"{len(self.imported)} imported, {len(self.duplicates)} already present, "
                 f"{len(self.skipped)} skipped ({where} in {self.tracking_uri})"]
        lines += [f"  imported  {r.path} -> run {r.run_id} ({r.source}{'' if r.complete else ', incomplete'})"
                  for r in self.imported]
        lines += [f"  present   {d.path} = run {d.run_id}" for d in self.duplicates]
        lines += [f"  skipped   {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def log_files(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, bool]]:
    """The files named by `paths`, a folder standing for its *.txt and *.log files (recursively), each with
    whether it was named itself (rather than found in a folder)."""
    files: list[tuple[Path, bool]] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in LOG_SUFFIXES)
            if not found:
                raise InputError(str(p), f"folder has no {' or '.join(LOG_SUFFIXES)} files")
            files.extend((f, False) for f in found)
        elif p.exists():
            files.append((p, True))
        else:
            raise InputError(str(p), "no such file or folder")
    if not files:
        raise InputError("PATH", "no log files given")
    return files


def _check_tracking_uri(uri: str) -> None:
    db = urls.sqlite_path(uri)
    if db is not None:
        folder = db.parent
        if not folder.is_dir():
            raise InputError("--mlflow-uri", f"folder {folder} of the sqlite database does not exist")
        if db.exists():
            check_store_file(db, MLFLOW, "--mlflow-uri", writable=True)
    elif not re.match(r"^(https?|postgresql(\+\w+)?|mysql(\+\w+)?|databricks)://", uri):
        raise InputError("--mlflow-uri", f"not a tracking URI MLflow can write to: {uri!r}")


def _parse(path: Path) -> tuple[str, ParsedLog]:
    """The sha256 of the file's content and the log it holds."""
    data = read_input_bytes(path)
    if b"\0" in data:
        raise InputError(str(path), "a binary file, not a training log")
    try:
        return hashlib.sha256(data).hexdigest(), parse_log(data.decode("utf-8", errors="replace"))
    except NotATrainingLog as e:
        raise InputError(str(path), f"not a training log: {e}") from None


def read_logs(paths: Iterable[str | os.PathLike]) -> tuple[list[tuple[Path, str, ParsedLog]], list[Skipped]]:
    """Every file read and parsed, before anything is written: (path, sha256, log) of each log, and the files
    skipped. A file named itself must be a training log; one found in a folder that is not is skipped (record
    folders hold other text files), and a folder must hold at least one."""
    paths = list(paths)
    logs, skipped = [], []
    for path, named in log_files(paths):
        try:
            logs.append((path, *_parse(path)))
        except InputError as e:
            if named:
                raise
            skipped.append(Skipped(str(path), e.message))
    if not logs:
        raise InputError(", ".join(map(str, paths)), "no training log to import: "
                                                     + "; ".join(f"{s.path}: {s.reason}" for s in skipped))
    return logs, skipped


def _existing_run(client, experiment_id: str, sha: str, sweep: str | None) -> str | None:
    query = f"tags.`{tracking.TAG_IMPORT_SHA256}` = '{sha}'"
    if sweep is not None:
        query += f" and tags.`{tracking.TAG_SWEEP}` = '{sweep}'"
    runs = client.search_runs([experiment_id], query, max_results=1)
    return runs[0].info.run_id if runs else None


def _params(log: ParsedLog) -> dict[str, str]:
    return {k: str(v)[:_MAX_PARAM_CHARS] for k, v in log.hyperparameters.items() if _PARAM_KEY.match(k)}


def _write_run(client, experiment_id: str, path: Path, sha: str, log: ParsedLog, sweep: str | None) -> str:
    from mlflow.entities import RunTag

    tags = {tracking.TAG_ROLE: tracking.IMPORT_ROLE, tracking.TAG_IMPORT_SOURCE: log.source,
            tracking.TAG_IMPORT_FILE: path.name, tracking.TAG_IMPORT_PATH: str(path.resolve()),
            tracking.TAG_IMPORT_COMPLETE: str(log.complete).lower(), tracking.TAG_STATUS: log.status}
    if sweep is not None:
        tags[tracking.TAG_SWEEP] = sweep
    run = client.create_run(experiment_id, run_name=path.name, tags=tags)
    run_id = run.info.run_id
    try:
        tracking.log_params(client, run_id, _params(log))
        batch = tracking.MetricBatch(client, run_id)
        for p in log.train:
            batch.add({"train_loss": p.train_loss, "train_time_ms": p.train_time_ms,
                       "step_avg_ms": p.step_avg_ms}, p.step)
        for p in log.val:
            batch.add({"val_loss": p.val_loss, "val_bpb": p.val_bpb, "train_time_ms": p.train_time_ms,
                       "step_avg_ms": p.step_avg_ms}, p.step)
        batch.add({name: getattr(log, attr) for name, attr in _FINAL_FROM_LOG.items()}, log.last_step or 0)
        batch.flush()
        client.log_artifact(run_id, os.fspath(path))
        # The identity tag goes on last: a run cut off half-written is not taken for a finished import.
        client.log_batch(run_id, tags=[RunTag(tracking.TAG_IMPORT_SHA256, sha)])
        client.set_terminated(run_id, "FINISHED" if log.complete else "KILLED")
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    return run_id


def import_logs(paths: Iterable[str | os.PathLike], experiment: str = DEFAULT_EXPERIMENT,
                tracking_uri: str = urls.DEFAULT_MLFLOW_URI, sweep: str | None = None) -> ImportReport:
    """Import each log file (a folder: its *.txt and *.log files) as one MLflow run in `experiment`,
    tagged with `sweep` when given.

    Bad input (a missing path, an empty experiment name, an unusable tracking URI, a file named in `paths`
    that is not a training log, a folder holding none) raises InputError before MLflow is touched. Files
    found in a folder that are not training logs are skipped and listed in the report; logs whose content
    is already in the experiment (imported for `sweep`, when given) are listed as duplicates and not written
    again.
    """
    if not experiment or not experiment.strip():
        raise InputError("--experiment", "the experiment name is empty")
    _check_tracking_uri(tracking_uri)
    logs, skipped = read_logs(paths)

    client = tracking.client(tracking_uri)
    experiment_id = tracking.ensure_experiment(client, tracking_uri, experiment)
    report = ImportReport(experiment, experiment_id, tracking_uri, sweep, skipped=skipped)
    this_call: dict[str, str] = {}
    for path, sha, log in logs:
        existing = this_call.get(sha) or _existing_run(client, experiment_id, sha, sweep)
        if existing is not None:
            report.duplicates.append(Duplicate(str(path), existing))
            continue
        run_id = _write_run(client, experiment_id, path, sha, log, sweep)
        this_call[sha] = run_id
        report.imported.append(ImportedRun(str(path), run_id, log.source, log.complete))
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="log files, or folders of *.txt / *.log files")
    p.add_argument("--sweep", metavar="NAME",
                   help="import beside this sweep's trials: into its MLflow store and experiment, tagged with "
                        "its name, so `sweep compare NAME` draws the logs as reference curves")
    p.add_argument("--results-dir",
                   help=f"where the sweep of --sweep keeps its state (default {DEFAULT_RESULTS_DIR})")
    p.add_argument("--experiment",
                   help=f"MLflow experiment to import into (default: the sweep's with --sweep, else "
                        f"{DEFAULT_EXPERIMENT})")
    p.add_argument("--mlflow-uri",
                   help=f"MLflow tracking URI (default: the sweep's with --sweep, else {urls.DEFAULT_MLFLOW_URI})")


def _same_store(a: str, b: str) -> bool:
    files = urls.sqlite_path(a), urls.sqlite_path(b)
    return a == b or (None not in files and files[0].resolve() == files[1].resolve())


def destination(args: argparse.Namespace) -> tuple[str, str, str | None]:
    """(tracking URI, experiment, sweep name) the command imports into. With --sweep the sweep's plan
    names the store and the experiment; a flag that names another one is an error, not a quiet override,
    since runs imported beside some other sweep's trials would never show in this sweep's comparison."""
    uri = urls.absolute(credentials.mlflow_uri(args.mlflow_uri)) if args.mlflow_uri else None
    if args.sweep is None:
        if args.results_dir is not None:
            raise InputError("--results-dir", "names where a sweep lives; it needs --sweep NAME")
        experiment = DEFAULT_EXPERIMENT if args.experiment is None else args.experiment
        return uri or urls.absolute(urls.DEFAULT_MLFLOW_URI), experiment, None
    plan = load_plan(args.results_dir or DEFAULT_RESULTS_DIR, args.sweep, "--sweep")
    sweep_uri = urls.absolute(plan.mlflow_uri)
    if uri is not None and not _same_store(uri, sweep_uri):
        raise InputError("--mlflow-uri", f"sweep {plan.name} keeps its runs in {sweep_uri}, not {uri}; "
                                         f"leave --mlflow-uri out")
    if args.experiment is not None and args.experiment != plan.experiment:
        raise InputError("--experiment", f"sweep {plan.name}'s runs are in experiment {plan.experiment!r}, not "
                                         f"{args.experiment!r}; leave --experiment out")
    return sweep_uri, plan.experiment, plan.name


def main(args: argparse.Namespace) -> int:
    uri, experiment, sweep = destination(args)
    report = import_logs(args.paths, experiment, uri, sweep)
    print(report.summary())
    print(f"view with: {tracking.ui_command(uri)}")
    return EXIT_OK
