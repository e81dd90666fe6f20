"""The golf score rule against the records of the parameter-golf repository: does the score our log parser
reads from each record's logs equal the score the record itself claims?

    python bench/check_golf_scores.py SOURCE [--track NAME] [--verbose]

SOURCE is a parameter-golf checkout (a work tree, or a bare git directory, read at HEAD with `git archive`)
or any folder holding record folders. A record folder is one with a `submission*.json`; its logs are the
`.log` and `.txt` files under it that print at least one evaluation line. Nothing is downloaded.

Each log is read line by line with `sweep.runlog.logparse.LogFold`, exactly as a sweep reads a trial's
output, and its score (`roundtrip_val_bpb` / `roundtrip_val_loss`, docs/golf_score.md) is compared with
the submission: per seed where it gives per-seed results (`seed_results`, a `seeds` mapping, or `seeds`
with `seed_scores`), a log belonging to a seed by the seed in its file name (`train_seed42.log`,
`seed_42.log`) or else the `seed` its hyperparameters print; otherwise its top-level `val_bpb` / `val_loss`
against each log's score and against the mean over the seeds' logs. A value agrees when the log's number
rounds to it at the precision the submission wrote it with (1.0661 agrees with 1.06610085).

Prints one line per record (agree / DISAGREE / unchecked), under it what did not agree or could not be
checked (with --verbose also what agreed), and the counts.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from statistics import fmean

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sweep.runlog.logparse import EvalResult, LogFold

LOG_SUFFIXES = (".log", ".txt")
SUBMISSION = re.compile(r"^submission.*\.json$")
SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)", re.I)
FIELDS = ("val_bpb", "val_loss")


@dataclass(frozen=True)
class LogScore:
    name: str                  # the log's path inside its record folder
    seed: str | None
    label: str | None          # the evaluation the score came from; None: the log has no score
    score: EvalResult | None
    evals: dict[str, EvalResult]   # every evaluation the log printed, by label, in order


@dataclass
class Verdict:
    record: str
    state: str = "unchecked"   # agree | disagree | unchecked
    notes: list[str] = field(default_factory=list)      # what did not agree, or could not be checked
    agreements: list[str] = field(default_factory=list)  # what agreed (printed with --verbose)
    checks: int = 0
    agreed: int = 0


def wanted(name: str) -> bool:
    return name.endswith(LOG_SUFFIXES) or bool(SUBMISSION.match(PurePosixPath(name).name))


def read_source(source: Path) -> dict[str, bytes]:
    """Path (posix, from SOURCE) -> content of every file that a record check may read."""
    if (source / "HEAD").is_file() and (source / "objects").is_dir():  # a git directory without a work tree
        data = subprocess.run(["git", "-C", str(source), "archive", "HEAD", "records"], check=True,
                              capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile() and wanted(m.name)}
    return {p.relative_to(source).as_posix(): p.read_bytes() for p in sorted(source.rglob("*"))
            if p.is_file() and wanted(p.name)}


def score_log(name: str, text: str) -> LogScore | None:
    """The log's score as a sweep reads it; None for a file that prints no evaluation at all."""
    fold = LogFold()
    for line in text.splitlines():
        fold.feed(line)
    if not fold.evals:
        return None
    m = SEED_IN_NAME.search(PurePosixPath(name).name)
    seed = m.group(1) if m else fold.hyperparameters.get("seed")
    label, score = fold.score if fold.score is not None else (None, None)
    return LogScore(name, seed, label, score, dict(fold.evals))


def decimals(value: float) -> int:
    text = repr(float(value))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 0


def agrees(claimed: float, read: float | None) -> bool:
    """`read` rounds to `claimed` at the precision `claimed` was written with."""
    return read is not None and abs(read - claimed) <= 0.5 * 10 ** -decimals(claimed) + 1e-12


def claims(entry: dict) -> dict[str, float]:
    return {f: float(entry[f]) for f in FIELDS if isinstance(entry.get(f), (int, float))
            and not isinstance(entry.get(f), bool)}


def per_seed_claims(sub: dict) -> dict[str, dict[str, float]]:
    """seed -> {val_bpb, val_loss} as the submission gives them per seed; {} when it gives none."""
    for key in ("seed_results", "seeds"):
        if isinstance(sub.get(key), dict):
            found = {str(seed): claims(entry) for seed, entry in sub[key].items() if isinstance(entry, dict)}
            return {seed: c for seed, c in found.items() if c}
    if isinstance(sub.get("seeds"), list) and isinstance(sub.get("seed_scores"), list):
        return {str(seed): {"val_bpb": float(score)} for seed, score in zip(sub["seeds"], sub["seed_scores"])}
    return {}


def matches(claim: dict[str, float], score: EvalResult | None) -> bool:
    return score is not None and all(agrees(v, getattr(score, f)) for f, v in claim.items())


def shown(log: LogScore, claim: dict[str, float]) -> str:
    """What the log scores, and which of its evaluations (if any) the claim matches instead."""
    read = (f"{log.label} val_bpb {log.score.val_bpb} val_loss {log.score.val_loss}" if log.score is not None
            else "no score")
    instead = [label for label, result in log.evals.items() if label != log.label and matches(claim, result)]
    return f"{log.name}{f' (seed {log.seed})' if log.seed else ''}: {read}" + (
        f"; the claim is its {', '.join(instead)}" if instead else "")


def elsewhere(claim: dict[str, float], logs: list[LogScore]) -> list[str]:
    """The logs of other seeds whose score is the claim (a submission that names the wrong seed)."""
    return [f"the claim is the score of {log.name} (seed {log.seed})" for log in logs if matches(claim, log.score)]


def check_seeds(verdict: Verdict, seeds: dict[str, dict[str, float]], logs: list[LogScore]) -> None:
    for seed, claim in seeds.items():
        mine = [log for log in logs if log.seed == seed]
        if not mine:
            verdict.notes.append(f"seed {seed}: no log")
            continue
        verdict.checks += 1
        hit = next((log for log in mine if matches(claim, log.score)), None)
        if hit is not None:
            verdict.agreed += 1
            verdict.agreements.append(f"seed {seed}: {hit.label} agrees ({hit.name})")
        else:
            others = elsewhere(claim, [log for log in logs if log.seed != seed])
            verdict.notes.append(f"seed {seed}: claims {claim}; " + "; ".join([*(shown(log, claim) for log in mine),
                                                                              *others]))


def check_top_level(verdict: Verdict, claim: dict[str, float], logs: list[LogScore]) -> None:
    verdict.checks += 1
    hit = next((log for log in logs if matches(claim, log.score)), None)
    if hit is not None:
        verdict.agreed += 1
        verdict.agreements.append(f"{hit.label} agrees ({hit.name})")
        return
    one_per_seed = {log.seed or log.name: log for log in logs if log.score is not None}
    means = {f: fmean(getattr(log.score, f) for log in one_per_seed.values()) for f in claim
             if one_per_seed and all(getattr(log.score, f) is not None for log in one_per_seed.values())}
    if len(one_per_seed) > 1 and len(means) == len(claim) and all(agrees(v, means[f]) for f, v in claim.items()):
        verdict.agreed += 1
        labels = sorted({log.label for log in one_per_seed.values()})
        verdict.agreements.append(f"mean of {len(one_per_seed)} seeds' {', '.join(labels)} agrees")
        return
    verdict.notes.append(f"claims {claim}" + (f" (mean of the logs: {means})" if len(one_per_seed) > 1 else "")
                         + "; " + "; ".join(shown(log, claim) for log in logs))


def check_record(folder: str, submission: bytes, logs: list[LogScore]) -> Verdict:
    verdict = Verdict(folder)
    try:
        sub = json.loads(submission)
    except json.JSONDecodeError as e:
        verdict.notes.append(f"submission is not JSON ({e})")
        return verdict
    if not logs:
        verdict.notes.append("no log prints an evaluation")
        return verdict
    seeds = per_seed_claims(sub)
    if seeds:
        check_seeds(verdict, seeds, logs)
    elif claims(sub):
        check_top_level(verdict, claims(sub), logs)
    else:
        verdict.notes.append("the submission gives no val_bpb or val_loss")
    if verdict.checks:
        verdict.state = "agree" if verdict.agreed == verdict.checks else "disagree"
    return verdict


def check(files: dict[str, bytes], track: str | None) -> list[Verdict]:
    submissions = {str(PurePosixPath(p).parent): p for p in sorted(files) if SUBMISSION.match(PurePosixPath(p).name)}
    verdicts = []
    for folder, submission in sorted(submissions.items()):
        if track and track not in PurePosixPath(folder).parts:
            continue
        logs = []
        for path in sorted(files):
            if path.startswith(folder + "/") and path.endswith(LOG_SUFFIXES):
                log = score_log(path[len(folder) + 1:], files[path].decode("utf-8", "replace"))
                if log is not None:
                    logs.append(log)
        verdicts.append(check_record(folder, files[submission], logs))
    return verdicts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", type=Path, help="a parameter-golf checkout (work tree or git dir) or a folder of records")
    p.add_argument("--track", help="only the records of this track folder, e.g. track_10min_16mb")
    p.add_argument("--verbose", action="store_true", help="say what agreed, not only what did not")
    args = p.parse_args()
    verdicts = check(read_source(args.source), args.track)
    for v in verdicts:
        print(f"{v.state.upper() if v.state == 'disagree' else v.state:9} {v.record}")
        for note in [*(v.agreements if args.verbose else []), *v.notes]:
            print(f"          {note}")
    counts = {s: sum(v.state == s for v in verdicts) for s in ("agree", "disagree", "unchecked")}
    checked = counts["agree"] + counts["disagree"]
    print(f"\n{counts['agree']} of {checked} checked records agree ({counts['disagree']} disagree, "
          f"{counts['unchecked']} unchecked); {sum(v.agreed for v in verdicts)} of "
          f"{sum(v.checks for v in verdicts)} scores (per seed where the submission gives them)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
