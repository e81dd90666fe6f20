"""Chaos campaign: a real sweep under random faults, then what its stores and the machine say.

    python bench/chaos.py [--trials 20] [--seed 0] [--faults 8] [--gap 10 45] [--timeout 3600] [--concurrency 2]
                          [--iterations 200] [--step-s 0.05] [--keep] [--out bench/results/chaos.json]

Runs `sweep run` as a user would, in a fresh temporary folder with the default stores there (sqlite
mlflow.db and optuna.db, Tune's state in runs/), on a space file it writes there, with the tests' stand-in
trainer under torchrun (two ranks per trial). While the sweep runs it injects `--faults` faults, each a kind
and a gap drawn from a `random.Random(--seed)`: SIGKILL of a rank, of a trial's supervisor
(`python -m sweep.trial.supervisor`), of the torchrun agent (the supervisor's child), of the driver, or SIGTERM
of the driver. A fault waits for its gap and for a trial's rank to be running, so it lands mid-trial. The
processes are found by walking the current driver's process tree in /proc, nothing else is signalled.
After a driver exits other than 0 it runs `sweep resume NAME`, until a driver exits 0 or `--faults + 3`
rounds.

Then it counts, from the stores: trials requested; Optuna's trials by state; trials ended (COMPLETE,
PRUNED, FAIL); duplicates (Optuna trials beyond the requested number, extra child runs of a trial number);
lost (a trial number below the requested one that is not ended in Optuna or has no terminated child run);
what is left RUNNING in Optuna or MLflow; disagreements between a trial's Optuna state and value and its
child run's status, `sweep.status` and `objective`; the sweep's processes left once the last driver exited
(every process seen in a driver's tree, and any whose command line holds the temporary folder); `pragma
integrity_check` of both sqlite files; and, for each driver SIGKILL, the seconds until none of the tree's
trainer processes (supervisor, agent, ranks) was left. The trainers get the temporary folder as a `--set`
value and Ray its session folder there (RAY_TMPDIR), so both show up in the command-line search; this also
keeps the campaign's Ray instances apart from any other on the machine.

Prints each fault as it is injected, a summary table and a last line
`chaos: N trials requested, E ended, D duplicates, L lost, R RUNNING, X disagreements; faults: K`, saves
the figures to `--out`, and exits 1 when anything is lost, duplicated, left RUNNING, disagreeing, left
running as a process, not ok in sqlite, or a driver exited in a way no fault explains (or never 0).
The folder is deleted afterwards unless `--keep` or the check failed (then its path is printed: the
drivers' output is in driver_N.log there).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sweep.trial.supervisor import descendants

RESULTS = REPO / "bench" / "results"
FAKE = REPO / "tests" / "support" / "fake_trainer.py"
NAME = "chaos"
KINDS = ("rank", "supervisor", "agent", "driver-kill", "driver-term")
TRIAL_KINDS = {"rank": "ranks", "supervisor": "supervisors", "agent": "agents"}
POLL_S = 0.2
GONE_WAIT_S = 60.0            # for a tree's trainer processes to end after a driver SIGKILL
TERM_WAIT_S = 180.0           # for a SIGTERMed driver to exit before it is SIGKILLed as hung
# For the sweep's processes to end after the last driver exited: the dashboard and runtime-env agents of a
# SIGKILLed driver's local Ray instance end on their own, about 62 s after it (measured on 2 cores).
LEFT_WAIT_S = 90.0
TRACEBACK = "Traceback (most recent call last)"
TUNE_TRIAL_FAILED = "Trial task failed for trial"   # what Tune logs, with a traceback, when a trial raises
ENDED = ("COMPLETE", "PRUNED", "FAIL")
UNFINISHED_RUN = ("RUNNING", "SCHEDULED")
# A trial's Optuna state and its child run's MLflow status and `sweep.status` tag, when they agree.
AGREEING = {"COMPLETE": ("FINISHED", {"ok", "diverged", "wallclock_cap"}), "PRUNED": ("KILLED", {"pruned"}),
            "FAIL": ("FAILED", {"failed"})}


# --- processes, from /proc -----------------------------------------------------------------------------

def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[19])


def cmdline(pid: int) -> list[str]:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []
    return [a for a in args if a]  # a process that renamed itself (ray::...) pads with empty ones


def alive(key: tuple[int, int]) -> bool:
    """Whether the process (pid, start time) still runs: a pid taken again by a new process does not count."""
    stat = _stat(key[0])
    return stat is not None and stat[2] == key[1] and stat[0] != "Z"


def short(args: list[str], limit: int = 110) -> str:
    text = " ".join(a.replace(str(REPO) + "/", "") for a in args)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass
class Tree:
    """A driver's descendants now, and its trial processes by role."""
    keys: dict[int, tuple[int, int]] = field(default_factory=dict)
    commands: dict[int, list[str]] = field(default_factory=dict)
    supervisors: list[int] = field(default_factory=list)
    agents: list[int] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)

    def trainers(self) -> set[tuple[int, int]]:
        return {self.keys[p] for p in self.supervisors + self.agents + self.ranks if p in self.keys}


def walk(root: int) -> Tree:
    tree, parents = Tree(), {}
    for pid in descendants(root):
        stat = _stat(pid)
        if stat is None or stat[0] == "Z":
            continue
        tree.keys[pid], parents[pid], tree.commands[pid] = (pid, stat[2]), stat[1], cmdline(pid)
    tree.supervisors = sorted(p for p, c in tree.commands.items() if "sweep.trial.supervisor" in c[:3]
                              and not ("sweep.trial.supervisor" in tree.commands.get(parents[p], [])[:3]))
    tree.agents = sorted(p for p in tree.commands if parents[p] in tree.supervisors)
    tree.ranks = sorted(p for p in tree.commands if parents[p] in tree.agents)
    return tree


def trial_of(pid: int) -> str:
    """The trial a process runs for: the last part of its $SWEEP_RUN_DIR."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return "?"
    run_dir = next((e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"SWEEP_RUN_DIR=")), "")
    return Path(run_dir).name or "?"


def marked(folder: Path) -> list[int]:
    """Processes whose command line holds `folder`."""
    needle, me = str(folder), os.getpid()
    return [int(e.name) for e in Path("/proc").iterdir()
            if e.name.isdigit() and int(e.name) != me and needle in " ".join(cmdline(int(e.name)))]


def tracebacks(output: str) -> dict:
    """The tracebacks in a driver's output: those Tune logs for a trial that failed (a trial process killed),
    and any other."""
    parts = output.split(TRACEBACK)
    trial = sum(TUNE_TRIAL_FAILED in before.rstrip("\n").rsplit("\n", 1)[-1] for before in parts[:-1])
    return {"trial_failed_tracebacks": trial, "other_tracebacks": len(parts) - 1 - trial}


# --- the campaign --------------------------------------------------------------------------------------

class Campaign:
    def __init__(self, args, folder: Path):
        self.args, self.folder = args, folder
        self.rng = random.Random(args.seed)
        self.pending = [(self.rng.choice(KINDS), self.rng.uniform(*args.gap)) for _ in range(args.faults)]
        self.faults: list[dict] = []
        self.rounds: list[dict] = []
        self.seen: dict[tuple[int, int], list[str]] = {}
        self.following: list[tuple[dict, set, float]] = []
        self.t0 = time.monotonic()
        self.deadline = self.t0 + args.timeout
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                    "RAY_TMPDIR": str(folder)}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        print(f"[{self.now():7.1f}s] {text}", flush=True)

    def run_args(self) -> list[str]:
        space = self.folder / f"{NAME}.yaml"
        space.write_text(f"name: {NAME}\nmetric: val_loss\nmode: min\npreset: tiny\nparams:\n"
                         "  fake.quality: {type: float, low: 0.0, high: 1.0}\n")
        trainer = f"{sys.executable} -m torch.distributed.run --standalone --nproc_per_node=2 {FAKE}"
        sets = {"fake.step_s": self.args.step_s, "train.iterations": self.args.iterations, "train.val_every": 10,
                "fake.tag": self.folder}
        return ["run", "--space", space.name, "--trials", str(self.args.trials), "--concurrency",
                str(self.args.concurrency), "--name", NAME, "--trainer-cmd", trainer,
                *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")]]

    def campaign(self) -> None:
        args = self.run_args()
        for number in range(1, self.args.faults + 4):
            code = self.round(number, args)
            if code == 0 or time.monotonic() > self.deadline:
                return
            args = ["resume", NAME]

    def round(self, number: int, args: list[str]) -> int:
        command = f"cd {self.folder} && python -m sweep {shlex.join(args)}"
        log = self.folder / f"driver_{number}.log"
        with open(log, "w") as out:
            driver = subprocess.Popen([sys.executable, "-m", "sweep", *args], cwd=self.folder, env=self.env,
                                      stdout=out, stderr=subprocess.STDOUT)
        record = {"round": number, "command": command, "pid": driver.pid, "start_s": self.now(), "signal": None}
        self.rounds.append(record)
        self.say(f"round {number}: driver pid {driver.pid}: python -m sweep {short(args, 60)}")
        self.watch(driver, record)
        record.update(exit_code=driver.wait(), end_s=self.now(), **tracebacks(log.read_text(errors="replace")))
        expected = {None: 0, "SIGKILL": -signal.SIGKILL, "SIGTERM": 1}[record["signal"]]
        record["expected"] = record["exit_code"] == expected and not record["other_tracebacks"]
        self.say(f"round {number}: driver exited {record['exit_code']}"
                 + ("" if record["expected"] else f"  UNEXPECTED (expected {expected}, "
                                                  f"{record['other_tracebacks']} tracebacks; see {log.name})"))
        return record["exit_code"]

    def watch(self, driver: subprocess.Popen, record: dict) -> None:
        """Inject this round's faults until the driver exits (or the campaign's time is up)."""
        anchor = None   # when the gap to the next fault started: the last fault, or the first rank seen
        while driver.poll() is None:
            if time.monotonic() > self.deadline:
                self.say(f"timeout: SIGKILL of driver pid {driver.pid}")
                driver.kill()
                record["timeout"] = True
                return
            self.follow()
            tree = walk(driver.pid)
            self.seen.update({key: tree.commands[pid] for pid, key in tree.keys.items()})
            if self.pending and record["signal"] is None and tree.ranks:
                anchor = anchor if anchor is not None else time.monotonic()
                kind, gap = self.pending[0]
                if time.monotonic() >= anchor + gap and (kind not in TRIAL_KINDS or getattr(tree, TRIAL_KINDS[kind])):
                    self.pending.pop(0)
                    self.inject(kind, driver, tree, record)
                    anchor = time.monotonic()
            time.sleep(POLL_S)

    def inject(self, kind: str, driver: subprocess.Popen, tree: Tree, record: dict) -> None:
        fault = {"n": len(self.faults) + 1, "t_s": round(self.now(), 1), "round": record["round"], "kind": kind}
        self.faults.append(fault)
        if kind in TRIAL_KINDS:
            pid = self.rng.choice(getattr(tree, TRIAL_KINDS[kind]))
            fault.update(signal="SIGKILL", pid=pid, trial=trial_of(pid), cmd=short(tree.commands[pid]))
            self.say(f"fault {fault['n']}: SIGKILL {kind} pid {pid} ({fault['trial']}): {fault['cmd']}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                fault["missed"] = True
            return
        sig = signal.SIGKILL if kind == "driver-kill" else signal.SIGTERM
        record["signal"] = fault["signal"] = sig.name
        fault.update(pid=driver.pid, running=sorted({trial_of(p) for p in tree.ranks}))
        self.say(f"fault {fault['n']}: {sig.name} driver pid {driver.pid} (running: {', '.join(fault['running'])})")
        started = time.monotonic()
        driver.send_signal(sig)
        if sig == signal.SIGKILL:
            driver.wait()
            self.gone_after(tree, started, fault)
            self.say(f"  trainers gone after {fault['trainers_gone_s']} s; {len(fault['tree_left_then'])} more of its "
                     f"processes still there: {', '.join(fault['tree_left_then'])}")
            return
        try:
            driver.wait(timeout=TERM_WAIT_S)
        except subprocess.TimeoutExpired:
            fault["hung"] = True
            self.say(f"  driver still running {TERM_WAIT_S:.0f} s after SIGTERM: SIGKILL")
            driver.kill()
        fault["driver_exit_s"] = round(time.monotonic() - started, 2)

    def gone_after(self, tree: Tree, started: float, fault: dict) -> None:
        """Seconds from `started` until none of the tree's trainer processes is left, on `fault`; the rest of
        the tree (Ray's processes) is followed from then on by `follow`."""
        trainers = tree.trainers()
        while any(alive(k) for k in trainers) and time.monotonic() < started + GONE_WAIT_S:
            time.sleep(0.05)
        left = {k: tree.commands[k[0]] for k in tree.keys.values() if alive(k)}
        fault.update(trainers_gone_s=None if any(alive(k) for k in trainers) else round(time.monotonic() - started, 2),
                     trainers_left=sorted(k[0] for k in trainers if alive(k)),
                     tree_left_then=sorted(short(c, 60) for c in left.values()))
        self.following.append((fault, set(left), started))

    def follow(self) -> None:
        """Note when the last process of a SIGKILLed driver's tree ended."""
        for gone, keys, started in self.following:
            if "tree_gone_s" not in gone and not any(alive(k) for k in keys):
                gone["tree_gone_s"] = round(time.monotonic() - started, 1)

    def leftovers(self) -> dict:
        """The sweep's processes still running once the last driver exited (after up to LEFT_WAIT_S)."""
        started = time.monotonic()
        while True:
            self.follow()
            left = {k[0]: short(c) for k, c in self.seen.items() if alive(k)}
            left.update({pid: short(cmdline(pid)) for pid in marked(self.folder)})
            if not left or time.monotonic() > started + LEFT_WAIT_S:
                return {"left": left, "waited_s": round(time.monotonic() - started, 1)}
            time.sleep(0.5)


# --- the stores ----------------------------------------------------------------------------------------

def integrity(db: Path) -> str:
    if not db.exists():
        return "missing"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return "; ".join(row[0] for row in conn.execute("pragma integrity_check"))


def optuna_trials(folder: Path) -> list:
    import optuna

    if not (folder / "optuna.db").exists():
        return []
    try:
        return optuna.load_study(study_name=NAME, storage=f"sqlite:///{folder}/optuna.db").get_trials(deepcopy=False)
    except KeyError:
        return []


def mlflow_runs(folder: Path) -> tuple[list, list]:
    """(the sweep's parent runs, the child runs of each)."""
    from mlflow import MlflowClient

    from sweep.stores import tracking

    if not (folder / "mlflow.db").exists():
        return [], []
    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name(NAME)
    if experiment is None:
        return [], []
    parents = tracking.search_all(client, [experiment.experiment_id],
                                  f"tags.`{tracking.TAG_SWEEP}` = '{NAME}' and tags.`{tracking.TAG_ROLE}` = 'sweep'")
    children = [r for p in parents for r in tracking.child_runs(client, experiment.experiment_id, p.info.run_id)]
    return parents, children


def disagreement(trial, runs: list) -> str | None:
    """Why a trial's Optuna record and its child run disagree, or None."""
    from sweep.stores import tracking

    if len(runs) != 1 or trial.state.name not in AGREEING:
        return None  # counted as a duplicate, lost or RUNNING instead
    run = runs[0]
    status, tag = run.info.status, run.data.tags.get(tracking.TAG_STATUS)
    mlflow_status, tags = AGREEING[trial.state.name]
    objective = run.data.metrics.get(tracking.OBJECTIVE_METRIC)
    if status != mlflow_status or tag not in tags:
        return f"Optuna {trial.state.name}, MLflow {status} sweep.status={tag} objective={objective}"
    if trial.state.name == "COMPLETE" and (objective is None or not math.isclose(objective, trial.value,
                                                                                   rel_tol=1e-9, abs_tol=1e-12)):
        return f"Optuna value {trial.value}, MLflow objective {objective}"
    return None


def count(folder: Path, requested: int) -> dict:
    from sweep.stores import tracking

    trials = optuna_trials(folder)
    parents, children = mlflow_runs(folder)
    by_number: dict[int, list] = {}
    for run in children:
        by_number.setdefault(int(run.data.tags[tracking.TAG_TRIAL_NUMBER]), []).append(run)
    optuna_by_number = {t.number: t for t in trials}
    lost = [n for n in range(requested)
            if n not in optuna_by_number or optuna_by_number[n].state.name not in ENDED
            or not any(r.info.status not in UNFINISHED_RUN for r in by_number.get(n, []))]
    disagreements = {n: why for n, t in optuna_by_number.items() if (why := disagreement(t, by_number.get(n, [])))}
    running_optuna = [t.number for t in trials if t.state.name in ("RUNNING", "WAITING")]
    running_mlflow = [r.data.tags.get(tracking.TAG_TRIAL_NUMBER, "parent") for r in parents + children
                      if r.info.status in UNFINISHED_RUN]
    return {
        "requested": requested,
        "optuna_trials": len(trials), "optuna_by_state": dict(Counter(t.state.name for t in trials)),
        "ended": sum(t.state.name in ENDED for t in trials if t.number < requested),
        "optuna_beyond_requested": [t.number for t in trials if t.number >= requested],
        "parent_runs": [(p.info.run_id, p.info.status) for p in parents], "child_runs": len(children),
        "child_runs_by_status": dict(Counter(r.info.status for r in children)),
        "child_status_tags": dict(Counter(r.data.tags.get(tracking.TAG_STATUS, "-") for r in children)),
        "attempts_over_1": {n: int(r.data.tags.get(tracking.TAG_ATTEMPT, 1)) for n, rs in by_number.items()
                            for r in rs if int(r.data.tags.get(tracking.TAG_ATTEMPT, 1)) > 1},
        "numbers_with_several_runs": {n: len(rs) for n, rs in by_number.items() if len(rs) > 1},
        "lost": lost, "running_optuna": running_optuna, "running_mlflow": running_mlflow,
        "disagreements": disagreements,
        "integrity": {db: integrity(folder / db) for db in ("optuna.db", "mlflow.db")},
    }


# --- the report ----------------------------------------------------------------------------------------

def verdict(campaign: Campaign, counts: dict, left: dict) -> dict:
    duplicates = len(counts["optuna_beyond_requested"]) + sum(n - 1 for n in counts["numbers_with_several_runs"].values())
    rounds = campaign.rounds
    return {
        "duplicates": duplicates, "lost": len(counts["lost"]),
        "running": len(counts["running_optuna"]) + len(counts["running_mlflow"]),
        "disagreements": len(counts["disagreements"]), "processes_left": len(left["left"]),
        "integrity_ok": all(v == "ok" for v in counts["integrity"].values()),
        "unexpected_exits": [r["round"] for r in rounds if not r["expected"]],
        "finished": bool(rounds) and rounds[-1]["exit_code"] == 0 and not rounds[-1].get("timeout"),
        "several_parents": len(counts["parent_runs"]) != 1,
    }


def table(campaign: Campaign, counts: dict, left: dict, v: dict) -> str:
    kills = [f for f in campaign.faults if f["kind"] == "driver-kill"]
    gone = [f["trainers_gone_s"] for f in kills]
    rows = [
        ("faults injected (of --faults)", f"{len(campaign.faults)} of {campaign.args.faults}: "
                                          f"{dict(Counter(f['kind'] for f in campaign.faults))}"),
        ("driver rounds, exit codes", f"{len(campaign.rounds)}: {[r['exit_code'] for r in campaign.rounds]}"),
        ("unexpected driver exits (rounds)", v["unexpected_exits"]),
        ("Tune's trial-failed tracebacks in output", sum(r["trial_failed_tracebacks"] for r in campaign.rounds)),
        ("trials requested", counts["requested"]),
        ("Optuna trials, by state", f"{counts['optuna_trials']}: {counts['optuna_by_state']}"),
        ("trials ended (COMPLETE/PRUNED/FAIL)", counts["ended"]),
        ("Optuna trials beyond requested", counts["optuna_beyond_requested"]),
        ("parent runs (id, status)", counts["parent_runs"]),
        ("child runs, by status", f"{counts['child_runs']}: {counts['child_runs_by_status']}"),
        ("child runs, by sweep.status", counts["child_status_tags"]),
        ("trials run more than once (attempts)", counts["attempts_over_1"]),
        ("trial numbers with several child runs", counts["numbers_with_several_runs"]),
        ("lost trial numbers", counts["lost"]),
        ("RUNNING in Optuna / MLflow", f"{counts['running_optuna']} / {counts['running_mlflow']}"),
        ("Optuna vs MLflow disagreements", counts["disagreements"] or "none"),
        ("processes left after the last driver", left["left"] or "none"),
        ("pragma integrity_check", counts["integrity"]),
        ("driver SIGKILL -> no trainer left (s)", gone or "no driver SIGKILL"),
        ("driver SIGKILL -> its whole tree gone (s)", [f.get("tree_gone_s") for f in kills] or "no driver SIGKILL"),
        ("driver SIGTERM -> driver exit (s)", [f.get("driver_exit_s") for f in campaign.faults
                                               if f["kind"] == "driver-term"] or "no driver SIGTERM"),
    ]
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label.ljust(width)}  {value}" for label, value in rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seed of the faults' kinds, gaps and targets")
    p.add_argument("--faults", type=int, default=8, help="faults to inject (fewer when the sweep ends first)")
    p.add_argument("--gap", type=float, nargs=2, default=(10.0, 45.0), metavar=("MIN", "MAX"),
                   help="seconds between two faults, or from a round's first running rank to its first fault")
    p.add_argument("--timeout", type=float, default=3600, help="seconds for the whole campaign")
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--iterations", type=int, default=200, help="steps of each trial")
    p.add_argument("--step-s", type=float, default=0.05, help="seconds per step")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--out", type=Path, default=RESULTS / "chaos.json")
    args = p.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="chaos-"))
    campaign = Campaign(args, folder)
    print(f"chaos campaign in {folder}: {args.trials} trials, concurrency {args.concurrency}, seed {args.seed}, "
          f"{args.faults} faults planned: {[k for k, _ in campaign.pending]}", flush=True)
    campaign.campaign()
    left = campaign.leftovers()
    counts = count(folder, args.trials)
    v = verdict(campaign, counts, left)
    ok = not (v["duplicates"] or v["lost"] or v["running"] or v["disagreements"] or v["processes_left"]
              or v["unexpected_exits"] or v["several_parents"]) and v["integrity_ok"] and v["finished"]
    print("\n" + table(campaign, counts, left, v))
    from runs import machine, portable

    result = {"bench": "chaos", "command": shlex.join([Path(sys.executable).name, *sys.argv]), **machine(),
              "cpu_count": os.cpu_count(), "args": {k: str(x) if isinstance(x, Path) else x for k, x in vars(args).items()},
              "wall_s": round(campaign.now(), 1), "ok": ok, **v, "counts": counts, "processes": left,
              "faults": campaign.faults, "rounds": campaign.rounds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(portable(json.dumps(result, indent=2, default=str)) + "\n")
    if args.keep or not ok:
        print(f"kept {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"saved {args.out}; {'check ok' if ok else 'check FAILED'}; {round(campaign.now())} s")
    print(f"chaos: {args.trials} trials requested, {counts['ended']} ended, {v['duplicates']} duplicates, "
          f"{v['lost']} lost, {v['running']} RUNNING, {v['disagreements']} disagreements; faults: {len(campaign.faults)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
