"""A sweep's confirmation (`sweep run --confirm K`): once the search has ended, the top K distinct
configurations and the baseline (trial 0: the space's first point) run again on the same seeds, so seed
effects cancel in their differences, and the confirmed leaderboard says which beat the baseline beyond
noise (sweep.report.confirm_report).

The sequential design (the default; sweep.sequential) runs in rounds: round 1 runs seeds 1 and 2, each later
round the next seed, of every configuration still undecided and of the baseline, and after each round the
design stops the configurations it has decided, up to `--confirm-seeds` seeds. The fixed design
(`--confirm-fixed`) runs every configuration on seeds 1..N at once. Repeats of a program with no seed knob
run unpaired (a source-mode script that names no seed site: `paired`): the same rounds, without a seed,
judged with Welch's test.

The seeds run as Tune trials on whole nodes like the search's (sweep.orchestration.seed_grid): the fixed design's in the
Tune experiment `<results-dir>/<name>-confirm`, round r of the sequential design's in
`<results-dir>/<name>-confirm/round-r`. In MLflow the confirmation is a parent run of role `confirm` nested
under the sweep's parent run, with one child run per (configuration, seed): trial number `c * N + i` runs
configuration c (0 = the baseline) on seed i + 1. Its runs are not the sweep's trials, so the search
leaderboard, `sweep compare` and `sweep list` do not count them. The plan records the trials confirmed and
the confirmation's run, so `sweep resume` continues the same confirmation: the child runs are the record,
so the rounds whose runs all ended are replayed from them, and a round cut off runs again, where finished
runs give their results back and the round's Tune experiment is restored when Tune saved it.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from sweep.inputs.plan import CONFIRM, FIXED, SweepPlan
from sweep.inputs.space import SearchSpace
from sweep.report import sequential
from sweep.report.confirm_report import ConfirmedConfig, improvement_sample
from sweep.report.trial_rows import RUNNING, TrialRow, ranked
from sweep.report.verify_claim import NOT_RUN, RESULT_STATES, SeedResult
from sweep.stores import results_dir as results
from sweep.stores import tracking
from sweep.stores.child_run import close_unfinished_children
from sweep.stores.study import load_study
from sweep.trial.command import TrialSettings, search_settings

ROLE = "confirm"
MARKDOWN_ARTIFACT = "confirm.md"
TAG_WINNER = "sweep.confirm.winner"        # on the sweep's parent run: the winning trial's number, or none
TAG_TRIALS = "sweep.confirm.trials"        # on the confirmation's run: the search trials confirmed
UNDONE = (NOT_RUN, RUNNING, "stopped")     # a run that a round cut off, or has not started, must run again


def pick_trials(rows: list[TrialRow], params: dict[int, dict[str, Any]], top: int, space: SearchSpace) -> list[int]:
    """The baseline (trial 0), then the best `top` finished trials whose values differ from the baseline's
    and from each other's (a configuration the search ran twice is confirmed once)."""
    chosen = [0]
    for row in ranked(rows, space.objective):
        if len(chosen) > top:
            break
        if row.objective is None or row.status not in RESULT_STATES or row.number not in params:
            continue
        if all(params[row.number] != params[n] for n in chosen):
            chosen.append(row.number)
    return chosen


def paired(space: SearchSpace) -> bool:
    """Whether every configuration runs the same seeds, so the seed's effect cancels in the differences to
    the baseline (a paired design), or, for a source-mode script that names no seed site, runs repeats
    whose differences are tested unpaired (Welch's t-test)."""
    return bool(space.trainer.seed_key)


def seeds(plan: SweepPlan) -> list[int]:
    return list(range(1, plan.confirm_seeds + 1))


def round_count(plan: SweepPlan) -> int:
    return 1 if plan.confirm_design == FIXED else plan.confirm_seeds - 1


def round_seeds(plan: SweepPlan, number: int) -> list[int]:
    """The seeds round `number` (from 1) runs: all of them in the fixed design's one round; else 1 and 2 in
    round 1 (a t-test needs two), then one more a round."""
    if plan.confirm_design == FIXED:
        return seeds(plan)
    return [1, 2] if number == 1 else [number + 1]


def trial_number(plan: SweepPlan, config: int, seed: int) -> int:
    return config * plan.confirm_seeds + seed - 1


def trial_numbers(plan: SweepPlan) -> dict[int, tuple[int, int]]:
    """Confirmation trial number -> (configuration index, seed)."""
    return {trial_number(plan, c, seed): (c, seed) for c in range(len(plan.confirm_trials)) for seed in seeds(plan)}


def design(plan: SweepPlan) -> sequential.Design:
    return sequential.Design(plan.confirm_seeds, plan.confirm_min_effect, plan.confirm_alpha, plan.confirm_power,
                             len(plan.confirm_trials) - 1)


def prepare(plan: SweepPlan, space: SearchSpace, rows: list[TrialRow], mlflow_client, experiment_id: str,
            command: str) -> dict[int, dict[str, Any]]:
    """Choose the configurations (once: a resume keeps the plan's) and open the confirmation's run;
    returns the swept values of each confirmed trial."""
    trials = {t.number: dict(t.params) for t in load_study(plan.storage, plan.name).get_trials(deepcopy=False)}
    if not plan.confirm_trials:
        plan.confirm_trials = pick_trials(rows, trials, plan.confirm, space)
        plan.stage = CONFIRM
        plan.save()
    if plan.confirm_run_id:
        mlflow_client.update_run(plan.confirm_run_id, status="RUNNING")
    else:
        plan.confirm_run_id = tracking.open_parent(
            mlflow_client, experiment_id, plan.confirm_name, ROLE, plan.preset, plan.address, command,
            {tracking.PARENT_RUN_TAG: plan.parent_run_id, tracking.TAG_METRIC: space.metric,
             tracking.TAG_MODE: space.mode, TAG_TRIALS: ",".join(map(str, plan.confirm_trials))})
        plan.save()
    return {n: trials[n] for n in plan.confirm_trials}


def _settings(plan: SweepPlan, space: SearchSpace, experiment_id: str) -> TrialSettings:
    """The search's trial settings, under the confirmation's name, folder and parent run."""
    return replace(search_settings(plan, space, experiment_id), sweep=plan.confirm_name,
                   run_root=str((results.local_folder(plan.results_dir, plan.confirm_name) / "trials").resolve()),
                   parent_run_id=plan.confirm_run_id)


def _table(plan: SweepPlan, space: SearchSpace, values: dict[int, dict[str, Any]], configs: list[int],
           seed_list: list[int]) -> dict[int, dict[str, Any]]:
    """The runs of `configs` (indexes into the confirmed trials) on `seed_list`: trial number -> values, the
    seed among them when the runs are paired."""
    seed_key = space.trainer.seed_key
    return {trial_number(plan, c, seed): {**values[plan.confirm_trials[c]],
                                          **({seed_key: seed} if paired(space) else {})}
            for c in configs for seed in seed_list}


def _results(plan: SweepPlan, mlflow_client, experiment_id: str) -> dict[int, SeedResult]:
    """Every confirmation trial's result as its child run holds it, by trial number."""
    from sweep.orchestration.seed_grid import seed_results

    return seed_results(mlflow_client, experiment_id, plan.confirm_run_id,
                        {number: seed for number, (_, seed) in trial_numbers(plan).items()}, tracking.OBJECTIVE_METRIC)


def _usable(plan: SweepPlan, found: dict[int, SeedResult], config: int, last_seed: int) -> dict[int, float]:
    numbers = (trial_number(plan, config, seed) for seed in range(1, last_seed + 1))
    return {found[n].seed: found[n].loss for n in numbers if found[n].usable}


def _run_round(plan: SweepPlan, space: SearchSpace, table: dict[int, dict[str, Any]], name: str, results_dir: str,
               experiment_id: str, interrupts) -> None:
    from sweep.orchestration.seed_grid import run_grid

    run_grid(_settings(plan, space, experiment_id), table, name=name, results_dir=results_dir,
             concurrency=plan.concurrency, max_failures=plan.max_failures, metric=space.metric, mode=space.mode,
             interrupts=interrupts)


def run_fixed(plan: SweepPlan, space: SearchSpace, values: dict[int, dict[str, Any]], experiment_id: str,
              interrupts) -> None:
    """Run (or continue) the fixed design's trials on the Ray the driver started."""
    table = _table(plan, space, values, list(range(len(plan.confirm_trials))), seeds(plan))
    runs = (f"on seeds 1..{plan.confirm_seeds}" if paired(space) else
            f"{plan.confirm_seeds} times each (the script names no seed site: unpaired repeats)")
    print(f"confirmation {plan.confirm_name}: trials {', '.join(map(str, plan.confirm_trials))} (the baseline "
          f"first) {runs}: {len(table)} runs", flush=True)
    _run_round(plan, space, table, plan.confirm_name, plan.results_dir, experiment_id, interrupts)


def run_rounds(plan: SweepPlan, space: SearchSpace, values: dict[int, dict[str, Any]], mlflow_client,
               experiment_id: str, interrupts) -> sequential.Rounds | None:
    """Run (or continue) the sequential design's rounds on the Ray the driver started; returns them, or None
    when interrupted. A round whose runs have all ended is replayed from the child runs, not run again."""
    rounds = sequential.Rounds(design(plan))
    trials, last = plan.confirm_trials, round_count(plan)
    print(f"confirmation {plan.confirm_name}: trials {', '.join(map(str, trials))} (the baseline first), "
          f"{'paired seeds' if paired(space) else 'unpaired repeats (the script names no seed site)'}, in rounds of one more seed up to "
          f"{plan.confirm_seeds}", flush=True)
    found = _results(plan, mlflow_client, experiment_id)
    for number in range(1, last + 1):
        running = rounds.running
        if not running:
            break
        configs = [0] + [j + 1 for j in running]
        table = _table(plan, space, values, configs, round_seeds(plan, number))
        if any(found[n].status in UNDONE for n in table):
            which = "seeds 1 and 2" if number == 1 else f"seed {number + 1}"
            print(f"confirmation {plan.confirm_name}: round {number} of at most {last}: {which} of trials "
                  f"{', '.join(str(trials[c]) for c in configs)}: {len(table)} runs", flush=True)
            _run_round(plan, space, table, f"round-{number}", results.join(plan.results_dir, plan.confirm_name),
                       experiment_id, interrupts)
            close_unfinished_children(mlflow_client, experiment_id, plan.confirm_run_id)
            if interrupts is not None and interrupts.received:
                return None
            found = _results(plan, mlflow_client, experiment_id)
        baseline = _usable(plan, found, 0, number + 1)
        rounds.add({j: improvement_sample(_usable(plan, found, j + 1, number + 1), baseline, space.mode,
                                          paired(space)) for j in running}, last=number == last)
        decided = [f"trial {trials[j + 1]} {rounds.courses[j].verdict}" for j in running
                   if rounds.courses[j].state != sequential.RUNNING]
        print(f"confirmation {plan.confirm_name}: after round {number}: "
              f"{', '.join(decided) if decided else 'nothing decided'}; {len(rounds.running)} of "
              f"{len(trials) - 1} configurations go on", flush=True)
    return rounds


def configs(plan: SweepPlan, values: dict[int, dict[str, Any]], mlflow_client, experiment_id: str,
            rounds: sequential.Rounds | None = None) -> list[ConfirmedConfig]:
    """What each confirmed configuration gave on each seed it ran, read back from the confirmation's child
    runs (the sequential design's: on the seeds of its rounds, the baseline's as long as any ran)."""
    found = _results(plan, mlflow_client, experiment_id)
    last = dict.fromkeys(range(len(plan.confirm_trials)), plan.confirm_seeds)
    if rounds is not None:
        stops = [course.stopped or rounds.round for course in rounds.courses]
        last = {0: max(stops) + 1, **{j + 1: stop + 1 for j, stop in enumerate(stops)}}
    return [ConfirmedConfig(trial, values[trial], [found[trial_number(plan, index, seed)]
                                                   for seed in range(1, last[index] + 1)])
            for index, trial in enumerate(plan.confirm_trials)]
