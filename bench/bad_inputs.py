"""Bad inputs, given as a user gives them: every one should end in exit code 2 with a message naming the
file or flag and what is wrong, before anything is written or Ray starts (docs/running.md, "Exit codes").

    python bench/bad_inputs.py [--only SUBSTRING ...] [--timeout S] [--code REPO] [--out FILE] [--keep]

Each case gets a fresh temporary folder holding what it needs (a valid search space for the stand-in trainer
of the tests, the default stores `mlflow.db` and `optuna.db`, a prepared sweep `base` under `runs/`), and
then the bad input: a flag with a wrong type or out of bounds, an input file that is missing, a folder, empty,
binary, unreadable, not YAML or JSON, of the wrong shape or with unknown keys, a store that is not a
database or not the right one, a folder where a file is expected and the reverse, names with `/`, `..`, `.`.
It runs `python -m sweep ...` in that folder with a timeout (SIGINT, then SIGKILL of its process group),
and prints per case the exit code, the seconds and the message (the first line of stderr that is not a
progress line; for a traceback its last line), then

    bad inputs: exit 2 of N (tracebacks: T, other: O)

and how many cases wrote into their folder (a path added, removed or changed: a store, a lock file, a
sweep folder) or started Ray. Run as root, the commands run without the capability to override file
permissions, so an unreadable file is unreadable to them as to any user. Control cases (valid
input) check that each prepared setting is accepted, so a bad case fails for its own reason; they are
not counted. Saves bench/results/bad_inputs.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "bad_inputs.json"
EXIT_BAD_INPUT = 2
TIMEOUT_S = 60.0
STOP_GRACE_S = 20.0      # after SIGINT, before SIGKILL of the process group
# Root reads and writes any file whatever its mode: the commands run without that override.
DROP_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
PROGRESS = ("sweep run: checking", "sweep run: note:", "sweep run: starting")
LIBRARY_LOG = re.compile(r"^(\[[IWD] |\d{4}/\d\d/\d\d [\d:]+ (INFO|WARNING) )")  # Optuna's, MLflow's
RAY_STARTED = ("sweep run: starting", "Started a local Ray instance", "ray.init")
NAME = "base"            # the prepared sweep
RUN = ["run", "--space", "space.yaml", "--trials", "1", "--name", "camp"]
VERIFY_CONFIG = ["verify", "--config", "cfg.yaml", "--seeds", "2", "--target", "3.5"]
CONFIG = "train:\n  iterations: 4\n"
BINARY = random.Random(23).randbytes(4096)   # garbage, with NUL bytes and invalid UTF-8


@dataclass
class Case:
    name: str
    argv: list[str]                                  # after `python -m sweep`
    setup: Callable[[Path], None] | None = None      # builds the case's folder
    env: dict[str, str] = field(default_factory=dict)
    control: bool = False                            # valid input: must not exit 2


# ---------------------------------------------------------------------------------------------- settings

def space_text(code: Path) -> str:
    return (f"name: camp\nmetric: val_loss\nmode: min\n"
            f"trainer:\n  command: {sys.executable} {code}/tests/support/fake_trainer.py\n  params: args\n"
            f"params:\n  fp8.x_s: {{type: float, low: 0.1, high: 1.0, log: true}}\n"
            f"fixed:\n  train.iterations: 4\n  fake.step_s: 0.001\n")


class Builder:
    """Builds what cases need in their folders, from templates made once: the stores' empty schemas."""

    def __init__(self, root: Path, code: Path):
        self.code, self.template = code, root / "template"
        self.template.mkdir()
        import optuna
        from mlflow import MlflowClient

        MlflowClient(f"sqlite:///{self.template / 'mlflow.db'}").search_experiments()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        optuna.storages.RDBStorage(f"sqlite:///{self.template / 'optuna.db'}")
        other = sqlite3.connect(self.template / "other.db")
        other.execute("create table notes (id integer primary key, text text)")
        other.commit()
        other.close()

    def space(self, folder: Path, text: str | None = None) -> Path:
        path = folder / "space.yaml"
        path.write_text(space_text(self.code) if text is None else text)
        return path

    def store(self, folder: Path, kind: str, name: str | None = None) -> Path:
        """A copy of the template store `kind` (mlflow, optuna, other) as `name` in `folder`."""
        path = folder / (name or f"{kind}.db")
        shutil.copy(self.template / f"{kind}.db", path)
        return path

    def sweep(self, folder: Path, **fields) -> Path:
        """The sweep `base`, as `sweep run` leaves it: its plan, its MLflow experiment and parent run, its
        Optuna study; `fields` replace the plan's."""
        import optuna
        from mlflow import MlflowClient

        self.space(folder)
        mlflow_uri, storage = (f"sqlite:///{self.store(folder, 'mlflow')}", f"sqlite:///{self.store(folder, 'optuna')}")
        client = MlflowClient(mlflow_uri)
        experiment = client.create_experiment(NAME, artifact_location=(folder / "mlflow-artifacts").as_uri())
        parent = client.create_run(experiment, run_name=NAME, tags={"sweep.role": "sweep", "sweep.name": NAME})
        client.set_terminated(parent.info.run_id, "FINISHED")
        optuna.create_study(study_name=NAME, storage=storage)
        plan = {"name": NAME, "experiment": NAME, "space_file": str(folder / "space.yaml"),
                "space_text": space_text(self.code), "preset": "", "trials": 1, "concurrency": 1,
                "gpus_per_trial": 0, "nproc_per_trial": 1, "cpus_per_trial": 1, "scheduler": "fifo",
                "sampler": "tpe", "max_failures": 0, "mlflow_uri": mlflow_uri, "storage": storage,
                "results_dir": str(folder / "runs"), "cwd": str(folder),
                "trainer_cmd": f"{sys.executable} {self.code}/tests/support/fake_trainer.py", "trainer_params": "args",
                "parent_run_id": parent.info.run_id, **fields}
        path = folder / "runs" / NAME / "sweep.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(plan, indent=2) + "\n")
        return path


# ------------------------------------------------------------------------------------------- bad files

def bad_file(kind: str) -> Callable[[Path], None]:
    """Turn the file at a path into a bad one of `kind`; returns a function of the path."""
    def make(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "missing":
            return
        if kind == "folder":
            path.mkdir()
        elif kind == "binary":
            path.write_bytes(BINARY)
        elif kind == "empty":
            path.write_text("")
        elif kind == "text":
            path.write_text("this is not a database, a space or a plan\n" * 40)
        elif kind == "unreadable":
            path.write_text("name: camp\n")
            path.chmod(0)
        elif kind == "bad yaml":
            path.write_text("name: camp\nparams: {fp8.x_s: [1, 2\n  - broken: : :\n")
        elif kind == "yaml list":
            path.write_text("- name: camp\n- metric: val_loss\n")
        elif kind == "bad json":
            path.write_text('{"name": "base", "trials": ')
        elif kind == "json list":
            path.write_text('["base", 1]\n')
        else:
            raise ValueError(kind)
    return make


FILE_KINDS = ("missing", "folder", "binary", "empty", "unreadable")


LOG = Path("tests") / "data" / "logs" / "parameter_golf_int8.txt"


def plan_file(folder: Path) -> Path:
    return folder / "runs" / NAME / "sweep.json"


class Cases(list):
    """The cases, grouped by what is bad; the helpers build their folders."""

    def __init__(self, b: Builder):
        super().__init__()
        self.b = b
        for group in (controls, flag_types, numbers, space_files, config_files, plan_files, stores, folders, names,
                      agreements, logs):
            group(self, b)

    def add(self, name, argv, setup=None, **kw) -> None:
        self.append(Case(name, argv, setup, **kw))

    def with_space(self, folder: Path) -> None:
        self.b.space(folder)

    def space_then(self, change):
        def setup(folder):
            self.b.space(folder)
            change(folder)
        return setup

    def sweep_then(self, change=None, **fields):
        def setup(folder):
            self.b.sweep(folder, **fields)
            if change:
                change(folder)
        return setup

    def log(self, folder: Path, name: str = "log.txt") -> None:
        shutil.copy(self.b.code / LOG, folder / name)

def controls(c: Cases, b: Builder) -> None:
    # Controls: each prepared setting is accepted.
    c.add("control: run --dry-run", [*RUN, "--dry-run"], c.with_space, control=True)
    c.add("control: list", ["list"], lambda f: b.store(f, "mlflow"), control=True)
    c.add("control: compare", ["compare", NAME], c.sweep_then(), control=True)
    c.add("control: import-logs", ["import-logs", "log.txt"],
        lambda f: c.log(f),
        control=True)


def flag_types(c: Cases, b: Builder) -> None:
    # Flags of the wrong type.
    for flag in ("--trials", "--concurrency", "--gpus-per-trial", "--nproc-per-trial", "--cpus-per-trial", "--seed",
                 "--max-failures", "--confirm", "--confirm-seeds", "--min-effect", "--confirm-alpha",
                 "--confirm-power", "--stop-at", "--budget-gpu-hours", "--noise-std"):
        c.add(f"run {flag} abc", [*RUN, flag, "abc"], c.with_space)
    for flag in ("--scheduler", "--sampler", "--trainer-params"):
        c.add(f"run {flag} bogus", [*RUN, flag, "bogus"], c.with_space)
    c.add("compare --top abc", ["compare", NAME, "--top", "abc"], c.sweep_then())
    for flag in ("--seeds", "--min-effect", "--power", "--target", "--concurrency", "--max-failures"):
        c.add(f"verify {flag} abc", ["verify", NAME, flag, "abc"], c.sweep_then())
    c.add("run --unknown-flag", [*RUN, "--unknown-flag"], c.with_space)
    c.add("sweep with no command", [], None)


def numbers(c: Cases, b: Builder) -> None:
    # Numbers out of bounds.
    for flag, value in (("--trials", "0"), ("--trials", "-1"), ("--concurrency", "-1"), ("--gpus-per-trial", "-1"),
                        ("--gpus-per-trial", "8"), ("--nproc-per-trial", "-1"), ("--cpus-per-trial", "-1"),
                        ("--max-failures", "-1"), ("--confirm", "-1"), ("--budget-gpu-hours", "0"),
                        ("--budget-gpu-hours", "-1"), ("--noise-std", "-1"), ("--noise-std", "nan"),
                        ("--stop-at", "nan"), ("--stop-at", "inf")):
        c.add(f"run {flag} {value}", [*RUN, flag, value], c.with_space)
    for extra in (["--confirm-seeds", "1"], ["--confirm-alpha", "0"], ["--confirm-alpha", "1.5"],
                  ["--confirm-power", "0"], ["--min-effect", "-1"], ["--min-effect", "nan"]):
        c.add(f"run --confirm 1 {' '.join(extra)}", [*RUN, "--confirm", "1", *extra], c.with_space)
    c.add("run --confirm-seeds without --confirm", [*RUN, "--confirm-seeds", "3"], c.with_space)
    c.add("run --trials 99999999999999999999", [*RUN, "--trials", "99999999999999999999"], c.with_space)
    c.add("compare --top 0", ["compare", NAME, "--top", "0"], c.sweep_then())
    for extra in (["--seeds", "1"], ["--seeds", "0"], ["--concurrency", "-1"], ["--max-failures", "-1"],
                  ["--min-effect", "nan"], ["--min-effect", "0.1", "--power", "2"], ["--power", "0.9"]):
        c.add(f"verify {' '.join(extra)}", ["verify", NAME, *extra], c.sweep_then())


def space_files(c: Cases, b: Builder) -> None:
    # The search space file.
    for kind in (*FILE_KINDS, "bad yaml", "yaml list"):
        c.add(f"run --space: {kind}", [*RUN], c.space_then(lambda f, k=kind: bad_file(k)(f / "space.yaml")))
    c.add("run --space: unknown key", [*RUN], lambda f: b.space(f, space_text(b.code) + "colour: blue\n"))
    c.add("run --space: params of the wrong type", [*RUN],
        lambda f: b.space(f, space_text(b.code).replace("fp8.x_s: {type: float, low: 0.1, high: 1.0, log: true}",
                                                        "fp8.x_s: [0.1, 1.0]")))
    c.add("run --space: unknown name", ["run", "--space", "no_such_space", "--trials", "1"])
    c.add("run --preset: unknown", [*RUN, "--preset", "no-such-preset"], c.with_space)


def config_files(c: Cases, b: Builder) -> None:
    # The trainer config file of `sweep verify --config`.
    def config(text):
        return lambda f: (f / "cfg.yaml").write_text(text)
    for kind in ("missing", "folder", "binary", "unreadable", "bad yaml", "yaml list"):
        c.add(f"verify --config: {kind}", VERIFY_CONFIG, lambda f, k=kind: bad_file(k)(f / "cfg.yaml"))
    c.add("verify --config: unknown key", VERIFY_CONFIG, config("train:\n  colour: blue\n"))
    c.add("verify --config: wrong value type", VERIFY_CONFIG, config("train:\n  iterations: many\n"))


def plan_files(c: Cases, b: Builder) -> None:
    # The sweep's plan, sweep.json, read by resume, compare, verify and import-logs --sweep.
    for kind in (*FILE_KINDS, "bad json", "json list"):
        c.add(f"resume: sweep.json {kind}", ["resume", NAME], c.sweep_then(lambda f, k=kind: bad_file(k)(plan_file(f))))
    c.add("resume: sweep.json truncated", ["resume", NAME],
        c.sweep_then(lambda f: plan_file(f).write_text(plan_file(f).read_text()[:200])))
    for name, fields in (("trials a string", {"trials": "many"}), ("sets a list", {"sets": [1, 2]}),
                         ("space_text a number", {"space_text": 5}), ("space_text not a space", {"space_text": "x: 1"}),
                         ("unknown key", {"colour": "blue"}), ("name missing", {"name": None})):
        c.add(f"resume: sweep.json {name}", ["resume", NAME], c.sweep_then(**fields))
    for kind in ("binary", "unreadable", "bad json"):
        c.add(f"compare: sweep.json {kind}", ["compare", NAME], c.sweep_then(lambda f, k=kind: bad_file(k)(plan_file(f))))
        c.add(f"verify: sweep.json {kind}", ["verify", NAME], c.sweep_then(lambda f, k=kind: bad_file(k)(plan_file(f))))
        c.add(f"import-logs --sweep: sweep.json {kind}", ["import-logs", "log.txt", "--sweep", NAME],
            c.sweep_then(lambda f, k=kind: (bad_file(k)(plan_file(f)), (f / "log.txt").write_text("x"))))
    c.add("compare: sweep.json trials a string", ["compare", NAME], c.sweep_then(trials="many"))
    c.add("resume: no such sweep", ["resume", "nosuch"], c.sweep_then())


def stores(c: Cases, b: Builder) -> None:
    # The stores: the default files in the working folder, and the flags.
    for kind in ("text", "binary", "unreadable", "folder"):
        c.add(f"run: mlflow.db {kind}", [*RUN], c.space_then(lambda f, k=kind: bad_file(k)(f / "mlflow.db")))
        c.add(f"run: optuna.db {kind}", [*RUN], c.space_then(lambda f, k=kind: bad_file(k)(f / "optuna.db")))
        c.add(f"list: mlflow.db {kind}", ["list"], lambda f, k=kind: bad_file(k)(f / "mlflow.db"))
    c.add("run: mlflow.db another program's database", [*RUN], c.space_then(lambda f: b.store(f, "other", "mlflow.db")))
    c.add("run: mlflow.db is Optuna's", [*RUN], c.space_then(lambda f: b.store(f, "optuna", "mlflow.db")))
    c.add("run: optuna.db another program's database", [*RUN], c.space_then(lambda f: b.store(f, "other", "optuna.db")))
    c.add("run: optuna.db is MLflow's", [*RUN], c.space_then(lambda f: b.store(f, "mlflow", "optuna.db")))
    c.add("list: mlflow.db another program's database", ["list"], lambda f: b.store(f, "other", "mlflow.db"))
    for uri in ("sqlite:///no/such/folder/mlflow.db", "sqlite://", "foo://bar", "not a uri at all"):
        c.add(f"run --mlflow-uri {uri}", [*RUN, "--mlflow-uri", uri], c.with_space)
    for url in ("sqlite:///no/such/folder/optuna.db", "sqlite://", "foo://bar"):
        c.add(f"run --storage {url}", [*RUN, "--storage", url], c.with_space)
    c.add("run --mlflow-uri: unwritable folder", [*RUN, "--mlflow-uri", "sqlite:///ro/mlflow.db"],
        c.space_then(lambda f: ((f / "ro").mkdir(), (f / "ro").chmod(0o555))))
    for kind in ("text", "unreadable"):
        c.add(f"import-logs: mlflow.db {kind}", ["import-logs", "log.txt"],
            lambda f, k=kind: (bad_file(k)(f / "mlflow.db"),
                               c.log(f)))
        c.add(f"verify --config: mlflow.db {kind}", VERIFY_CONFIG,
            lambda f, k=kind: (bad_file(k)(f / "mlflow.db"), (f / "cfg.yaml").write_text(CONFIG)))
        c.add(f"compare: the sweep's mlflow.db {kind}", ["compare", NAME], c.sweep_then(lambda f, k=kind: bad_file(k)(f / "mlflow.db")))
        c.add(f"compare: the sweep's optuna.db {kind}", ["compare", NAME], c.sweep_then(lambda f, k=kind: bad_file(k)(f / "optuna.db")))
        c.add(f"resume: the sweep's mlflow.db {kind}", ["resume", NAME], c.sweep_then(lambda f, k=kind: bad_file(k)(f / "mlflow.db")))
        c.add(f"resume: the sweep's optuna.db {kind}", ["resume", NAME], c.sweep_then(lambda f, k=kind: bad_file(k)(f / "optuna.db")))
        c.add(f"verify: the sweep's mlflow.db {kind}", ["verify", NAME], c.sweep_then(lambda f, k=kind: bad_file(k)(f / "mlflow.db")))
    c.add("compare: the sweep's mlflow.db missing", ["compare", NAME], c.sweep_then(lambda f: (f / "mlflow.db").unlink()))
    c.add("resume: the sweep's optuna.db missing", ["resume", NAME], c.sweep_then(lambda f: (f / "optuna.db").unlink()))
    for variable in ("SWEEP_STORAGE_PASSWORD", "SWEEP_MLFLOW_PASSWORD"):
        c.add(f"run: {variable} with a sqlite store", [*RUN], c.with_space, env={variable: "hunter2"})


def folders(c: Cases, b: Builder) -> None:
    # Folders where files are expected and the reverse.
    c.add("run --results-dir: a file", [*RUN, "--results-dir", "results"],
        c.space_then(lambda f: (f / "results").write_text("x")))
    c.add("run --results-dir: under a file", [*RUN, "--results-dir", "results/sub"],
        c.space_then(lambda f: (f / "results").write_text("x")))
    c.add("run --results-dir: unwritable folder", [*RUN, "--results-dir", "results"],
        c.space_then(lambda f: ((f / "results").mkdir(), (f / "results").chmod(0o555))))
    c.add("run --results-dir: unknown scheme", [*RUN, "--results-dir", "nosuch://bucket/x"], c.with_space)
    c.add("resume --results-dir: a file", ["resume", NAME, "--results-dir", "results"],
        lambda f: (f / "results").write_text("x"))
    c.add("compare --results-dir: a file", ["compare", NAME, "--results-dir", "results"],
        lambda f: (f / "results").write_text("x"))
    c.add("compare --out: a file", ["compare", NAME, "--out", "plots"], c.sweep_then(lambda f: (f / "plots").write_text("x")))
    c.add("verify --results-dir: a file", [*VERIFY_CONFIG, "--results-dir", "results"],
        lambda f: ((f / "results").write_text("x"), (f / "cfg.yaml").write_text(CONFIG)))


def names(c: Cases, b: Builder) -> None:
    # Names.
    for name in ("a/b", "..", ".", "", "a b"):
        c.add(f"run --name {name!r}", [*RUN[:-1], name], c.with_space)
    for name in ("..", ".", "../runs/base", "a/b"):
        c.add(f"resume {name!r}", ["resume", name], c.sweep_then())
    c.add("compare '..'", ["compare", ".."], c.sweep_then())
    c.add("verify '..'", ["verify", ".."], c.sweep_then())
    c.add("import-logs --sweep '..'", ["import-logs", "log.txt", "--sweep", ".."],
        c.sweep_then(lambda f: c.log(f)))
    c.add("import-logs --experiment ''", ["import-logs", "log.txt", "--experiment", ""],
        lambda f: c.log(f))


def agreements(c: Cases, b: Builder) -> None:
    # --set, the trainer command and other flags that must agree.
    for item in ("noequals", "=1", "fp8.x_s=0.5"):   # another program's keys are its own: any name is taken
        c.add(f"run --set {item}", [*RUN, "--set", item], c.with_space)
    c.add("verify --set no.such.key=1", [*VERIFY_CONFIG, "--set", "no.such.key=1"],
        lambda f: (f / "cfg.yaml").write_text(CONFIG))
    c.add("run --trainer-cmd: no such program", [*RUN, "--trainer-cmd", "no-such-program --x"], c.with_space)
    c.add("run --trainer-cmd: unbalanced quote", [*RUN, "--trainer-cmd", 'python "train.py'], c.with_space)
    c.add("run --trainer-cmd: unreadable script (env mode)", [*RUN, "--trainer-cmd", "python train.py",
                                                           "--trainer-params", "env"],
        c.space_then(lambda f: ((f / "space.yaml").write_text(
            space_text(b.code).replace("fp8.x_s", "FP8_X_S").replace("train.iterations", "ITERS")
            .replace("fake.step_s", "STEP_S")), bad_file("unreadable")(f / "train.py"))))
    c.add("verify --power without --min-effect", ["verify", NAME, "--power", "0.9"], c.sweep_then())
    c.add("import-logs --results-dir without --sweep", ["import-logs", "log.txt", "--results-dir", "runs"],
        lambda f: c.log(f))


def logs(c: Cases, b: Builder) -> None:
    # Logs to import.
    for kind in ("missing", "binary", "empty", "unreadable", "text"):
        c.add(f"import-logs: log {kind}", ["import-logs", "log.txt"], lambda f, k=kind: bad_file(k)(f / "log.txt"))
    c.add("import-logs: folder without logs", ["import-logs", "logs"], lambda f: (f / "logs").mkdir())
    c.add("import-logs: folder of non-logs", ["import-logs", "logs"],
        lambda f: ((f / "logs").mkdir(), (f / "logs" / "notes.txt").write_text("just notes\n")))


# ------------------------------------------------------------------------------------------------ running

def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under `folder`: (kind, size, mtime) of a file, the kind of anything else."""
    seen = {}
    for path in [folder, *folder.rglob("*")]:
        st = path.lstat()
        rel = str(path.relative_to(folder))
        seen[rel] = ("file", st.st_size, st.st_mtime_ns) if path.is_file() and not path.is_symlink() else ("other",)
    return seen


def changes(before: dict, after: dict) -> list[str]:
    added = [f"+{p}" for p in after if p not in before]
    removed = [f"-{p}" for p in before if p not in after]
    changed = [f"~{p}" for p in after if p in before and before[p] != after[p] and p != "."]
    return sorted(added + removed + changed)


def message(stderr: str) -> str:
    """The line that says what happened: a traceback's last, else the first error line, else the first line
    that is not progress or a library's log line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        return lines[-1][:200]
    errors = [line for line in lines if ": error: " in line]
    useful = [line for line in lines if not line.startswith(PROGRESS) and not LIBRARY_LOG.match(line)]
    return (errors or useful or lines or [""])[0][:200]


def run_case(case: Case, folder: Path, code: Path, timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWEEP_")}
    env.update(PYTHONPATH=str(code), **case.env)
    start = time.monotonic()
    proc = subprocess.Popen([*DROP_OVERRIDE, sys.executable, "-m", "sweep", *case.argv], cwd=folder, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
    seconds = time.monotonic() - start
    return {"rc": proc.returncode, "seconds": round(seconds, 2), "timed_out": timed_out,
            "traceback": "Traceback (most recent call last)" in err, "message": message(err),
            "ray_started": any(mark in err for mark in RAY_STARTED), "stderr_tail": err[-2000:], "stdout_tail": out[-500:]}


def unlock(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o700 if path.is_dir() else 0o600)


def outcome(r: dict) -> str:
    if r["control"]:
        return "ok" if r["rc"] == 0 else "CONTROL FAILED"
    if r["rc"] == EXIT_BAD_INPUT and not r["traceback"]:
        return "exit 2" + (", wrote" if r["wrote"] else "")
    return "traceback" if r["traceback"] else ("timeout" if r["timed_out"] else f"exit {r['rc']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=[], help="run only the cases whose name holds one of these")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, help=f"seconds per case (default {TIMEOUT_S:g})")
    p.add_argument("--code", type=Path, default=REPO, help="the repository whose `sweep` runs (default this one)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS.relative_to(REPO)})")
    p.add_argument("--keep", action="store_true", help="keep the cases' folders")
    args = p.parse_args()
    code = args.code.resolve()
    root = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    try:
        builder = Builder(root, code)
        chosen = [c for c in Cases(builder) if not args.only or any(s in c.name for s in args.only)]
        rows = []
        for i, case in enumerate(chosen):
            folder = root / f"case{i:03d}"
            folder.mkdir()
            if case.setup:
                case.setup(folder)
            before = snapshot(folder)
            result = run_case(case, folder, code, args.timeout)
            unlock(folder)
            row = {"case": case.name, "argv": case.argv, "control": case.control, **result,
                   "wrote": changes(before, snapshot(folder))}
            row["outcome"] = outcome(row)
            rows.append(row)
            mark = " [control]" if case.control else ""
            wrote = f" wrote {', '.join(row['wrote'][:4])}" if row["wrote"] else ""
            ray = " ray started" if row["ray_started"] else ""
            print(f"{row['outcome']:>14} rc={row['rc']:<3} {row['seconds']:6.1f}s  {case.name}{mark}: "
                  f"{row['message']}{wrote}{ray}", flush=True)
    finally:
        if args.keep:
            print(f"cases kept in {root}")
        else:
            unlock(root)
            shutil.rmtree(root, ignore_errors=True)
    bad = [r for r in rows if not r["control"]]
    exit2 = [r for r in bad if r["rc"] == EXIT_BAD_INPUT and not r["traceback"]]
    tracebacks = [r for r in bad if r["traceback"]]
    wrote = [r for r in bad if r["wrote"]]
    ray = [r for r in bad if r["ray_started"]]
    failed_controls = [r["case"] for r in rows if r["control"] and r["rc"] != 0]
    summary = {"cases": len(bad), "exit_2": len(exit2), "tracebacks": len(tracebacks),
               "other": len(bad) - len(exit2) - len(tracebacks), "wrote": len(wrote), "ray_started": len(ray),
               "not_exit_2": [r["case"] for r in bad if r not in exit2 or r["wrote"]],
               "failed_controls": failed_controls,
               "code": str(code), "seconds": round(sum(r["seconds"] for r in rows), 1)}
    print(f"\nbad inputs: exit 2 of {len(bad)} (tracebacks: {len(tracebacks)}, other: {summary['other']})")
    print(f"wrote into their folder: {len(wrote)}; started Ray: {len(ray)}; controls failed: {len(failed_controls)}")
    for name in summary["not_exit_2"]:
        print(f"  not exit 2, or wrote: {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from runs import portable

    args.out.write_text(portable(json.dumps({"summary": summary, "cases": rows}, indent=1)) + "\n")
    return 0 if not failed_controls else 1


if __name__ == "__main__":
    sys.exit(main())
