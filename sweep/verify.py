"""`sweep verify (NAME | --config FILE)`: re-run a configuration over several seeds and test the claim.

The re-runs are a sweep of their own (same trainable, same whole-node trials, in parallel where nodes
allow) whose only parameter is `seed`, evaluated at seeds 0..N-1, recorded in the same MLflow experiment
as the source sweep. Then the final losses and training times are summarised, and a one-sided one-sample
t-test against the target is written as a Markdown block in the style of the record READMEs, printed and
logged on the verify sweep's parent run (`verify.md` and the run's description).

Targets: `--target X`. Without it, the speedrun preset uses 3.28; the golf preset needs `--target` (the
current record's val_loss), and the test is then against X - 0.005 nats, the parameter-golf rule.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

from sweep import stats, tracking
from sweep.errors import InputError
from sweep.plan import DEFAULT_RESULTS_DIR, load_plan
from sweep.run import DEFAULT_MLFLOW_URI, build_plan, unique_name
from sweep.run import add_arguments as add_run_arguments

HELP = "re-run the best config of a sweep (or a config file) over N seeds and t-test it against a target"
MARKDOWN_ARTIFACT = "verify.md"
NOTE_TAG = "mlflow.note.content"
SEED_KEY = "seed"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="the sweep whose best trial is re-run")
    p.add_argument("--config", help="a trainer config file (YAML of config keys) to re-run instead")
    p.add_argument("--preset", help="trainer preset for --config (default: tiny without GPUs, else speedrun)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    p.add_argument("--target", type=float, help="val_loss to beat (default 3.28 for speedrun)")
    p.add_argument("--address", help="Ray cluster address (default: the sweep's, or a local Ray instance)")
    p.add_argument("--concurrency", type=int, default=0, help="re-runs at once (default: what the cluster holds)")
    p.add_argument("--gpus-per-trial", type=int, help="GPUs of one re-run (default: the sweep's)")
    p.add_argument("--mlflow-uri", help=f"MLflow tracking URI for --config (default {DEFAULT_MLFLOW_URI})")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help=f"where sweeps keep their state (default {DEFAULT_RESULTS_DIR})")


def _run_args(**values) -> argparse.Namespace:
    """`sweep run`'s arguments with its defaults, so the re-runs go through the same checks."""
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    args = p.parse_args([])
    for key, value in values.items():
        if value is not None:
            setattr(args, key, value)
    return args


def source_config(args: argparse.Namespace) -> tuple[str, dict, dict]:
    """(label, config keys to fix, `sweep run` settings) of what is to be verified."""
    if bool(args.name) == bool(args.config):
        raise InputError("verify", "give either a sweep NAME or --config FILE")
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise InputError("--config", f"no such file: {path}")
        from trainer.config import ConfigError, flatten

        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise InputError("--config", f"{path} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise InputError("--config", f"{path} must be a mapping of config keys")
        try:
            fixed = flatten(data)
        except ConfigError as e:
            raise InputError("--config", str(e)) from None
        return path.stem, fixed, {"preset": args.preset, "mlflow_uri": args.mlflow_uri or DEFAULT_MLFLOW_URI,
                                  "address": args.address, "gpus_per_trial": args.gpus_per_trial}
    from sweep.compare import trial_rows

    plan = load_plan(args.results_dir, args.name)
    finished = [r for r in trial_rows(plan) if r.objective is not None and r.status == "ok"]
    if not finished:
        raise InputError(args.name, "the sweep has no finished trial to verify")
    best = finished[0]
    fixed = {**plan.space().fixed, **best.params}
    print(f"verifying trial {best.number} of sweep {plan.name}: "
          + ", ".join(f"{k}={v}" for k, v in best.params.items()))
    return plan.name, fixed, {"preset": args.preset or plan.preset, "mlflow_uri": plan.mlflow_uri,
                              "storage": plan.storage, "address": args.address or plan.address or None,
                              "gpus_per_trial": args.gpus_per_trial if args.gpus_per_trial is not None
                              else plan.gpus_per_trial, "experiment": plan.experiment}


def resolve_target(preset: str, target: float | None) -> tuple[float, bool]:
    """(target, golf rule?) with the defaults of each track."""
    if target is not None:
        return target, preset == "golf"
    if preset == "speedrun":
        return stats.SPEEDRUN_TARGET, False
    raise InputError("--target", f"required for the {preset} preset (the val_loss to beat)")


def main(args: argparse.Namespace) -> int:
    if args.seeds < 2:
        raise InputError("--seeds", f"a t-test needs at least 2 seeds, got {args.seeds}")
    label, fixed, settings = source_config(args)
    fixed.pop(SEED_KEY, None)
    experiment = settings.pop("experiment", None) or f"{label}-verify"
    results_dir = str(Path(args.results_dir).resolve())
    space_dir = Path(results_dir) / "verify-spaces"
    space_dir.mkdir(parents=True, exist_ok=True)
    space_file = space_dir / f"{unique_name(f'{label}-verify', results_dir)}.yaml"
    space_file.write_text(yaml.safe_dump({
        "name": experiment, "metric": "val_loss", "mode": "min", "preset": settings["preset"] or "speedrun",
        "params": {SEED_KEY: {"type": "int", "low": 0, "high": 1_000_000}}, "fixed": fixed,
        "points_to_evaluate": [{SEED_KEY: s} for s in range(args.seeds)]}, sort_keys=False))
    run_args = _run_args(space=str(space_file), trials=args.seeds, concurrency=args.concurrency,
                         results_dir=results_dir, **settings)
    try:
        plan = build_plan(run_args)
        target, golf = resolve_target(plan.preset, args.target)
    except InputError:
        space_file.unlink()
        raise
    plan = dataclasses.replace(plan, name=space_file.stem)
    from sweep.driver import run_sweep

    rc = run_sweep(plan, command=f"sweep verify {label} --seeds {args.seeds}")
    plan = load_plan(results_dir, plan.name)
    client = tracking.client(plan.mlflow_uri)
    exp = client.get_experiment_by_name(plan.experiment)
    runs = [r for r in tracking.child_runs(client, exp.experiment_id, plan.parent_run_id)
            if "final_val_loss" in r.data.metrics]
    runs.sort(key=lambda r: int(r.data.tags[tracking.TAG_TRIAL_NUMBER]))
    losses = [r.data.metrics["final_val_loss"] for r in runs]
    times = [r.data.metrics["final_train_time_ms"] / 1000.0 for r in runs]
    if len(losses) < 2:
        print(f"only {len(losses)} re-run(s) finished: no t-test")
        return rc or 1
    markdown = (stats.golf_markdown(losses, times, target) if golf else stats.record_markdown(losses, times, target))
    header = f"## Verification of {label}: {len(losses)} seeds, preset {plan.preset}\n\n"
    print("\n" + header + markdown)
    client.log_text(plan.parent_run_id, header + markdown, MARKDOWN_ARTIFACT)
    client.set_tag(plan.parent_run_id, NOTE_TAG, header + markdown)
    p = stats.golf_test(losses, target) if golf else stats.speedrun_test(losses, target)
    client.log_metric(plan.parent_run_id, "p_value", p.p_value)
    client.log_metric(plan.parent_run_id, "mean_val_loss", p.mean)
    client.log_metric(plan.parent_run_id, "std_val_loss", p.std)
    return rc
