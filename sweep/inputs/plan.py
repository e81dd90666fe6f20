"""A sweep's settings, saved as `<results-dir>/<name>/sweep.json` so `sweep resume NAME` can continue it
(the results dir is a local folder or a URI: see `sweep.stores.results_dir`).

The plan keeps the space file's text as it was at launch: a resumed sweep searches the same space even
if the file has been edited since. It also records the stage the sweep reached (the search, then its
confirmation with `--confirm`), so a resume continues where the driver stopped; plans written before a
field existed load with its default.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, get_args, get_origin, get_type_hints

from sweep.errors import InputError
from sweep.inputs.input_files import read_input_text
from sweep.inputs.resources import TrialResources
from sweep.inputs.space import SearchSpace, parse_space
from sweep.inputs.store_files import check_sweep_stores
from sweep.inputs.trainer_spec import ARGS
from sweep.stores import results_dir as results

PLAN_FILE = "sweep.json"
SEARCH, CONFIRM = "search", "confirm"   # the stages of a sweep
FIXED, SEQUENTIAL = "fixed", "sequential"   # confirmation designs (docs/confirmation.md)
DEFAULT_RESULTS_DIR = "runs"


@dataclass
class SweepPlan:
    name: str
    experiment: str
    space_file: str
    space_text: str
    preset: str
    trials: int
    concurrency: int            # 0 = as many as the cluster holds (see sweep.orchestration.driver)
    gpus_per_trial: int
    nproc_per_trial: int
    cpus_per_trial: int
    scheduler: str
    sampler: str
    max_failures: int
    mlflow_uri: str
    storage: str
    results_dir: str
    cwd: str
    address: str = ""           # "" = a local Ray instance
    trainer_cmd: str = ""       # "" = the built-in trainer
    trainer_params: str = ARGS  # how keys reach trainer_cmd: env | args | source (sweep.inputs.trainer_spec)
    source_sha256: str = ""     # source mode: the script the trials edit, as `sweep run` checked it
    seed: int | None = None
    sets: dict[str, Any] = field(default_factory=dict)
    parent_run_id: str = ""
    confirm: int = 0            # top configurations confirmed over paired seeds; 0 = no confirmation
    confirm_seeds: int = 3      # the fixed design's seeds; the sequential design's maximum
    stop_at: float | None = None
    budget_gpu_hours: float | None = None
    noise_std: float | None = None
    stage: str = SEARCH
    confirm_run_id: str = ""    # the confirmation's parent run
    confirm_trials: list[int] = field(default_factory=list)  # the search trials confirmed, the baseline first
    # A plan from before sequential confirmation ran every seed: loaded, it goes on with the fixed design.
    confirm_design: str = FIXED
    confirm_min_effect: float | None = None   # the improvement of interest: futility stops below it
    confirm_alpha: float = 0.01               # one-sided family-wise type-I error (both upstream rules' 0.01)
    confirm_power: float = 0.8

    @property
    def tune_path(self) -> str:
        """Tune's experiment folder, beside the plan file."""
        return results.join(self.results_dir, self.name)

    @property
    def sweep_dir(self) -> Path:
        """The sweep's folder on this node's disk (the same as `tune_path` when the results dir is local)."""
        return results.local_folder(self.results_dir, self.name)

    @property
    def run_root(self) -> Path:
        return self.sweep_dir / "trials"

    @property
    def results_flag(self) -> str:
        """` --results-dir DIR` where the sweep keeps its state elsewhere than the commands look by default, for
        the commands the sweep prints."""
        return "" if self.results_dir == results.normalize(DEFAULT_RESULTS_DIR) else f" --results-dir {self.results_dir}"

    @property
    def confirm_name(self) -> str:
        """The confirmation's Tune experiment (beside the sweep's) and MLflow parent run."""
        return f"{self.name}-confirm"

    @property
    def devices_per_trial(self) -> int:
        """What a trial's hours are counted in: its GPUs, or its CPUs for a CPU trial."""
        return self.gpus_per_trial or self.cpus_per_trial

    @property
    def resources(self) -> TrialResources:
        return TrialResources(self.gpus_per_trial, self.nproc_per_trial, self.cpus_per_trial)

    def space(self) -> SearchSpace:
        return (parse_space(self.space_text, self.space_file).with_trainer(self.trainer_cmd, self.trainer_params)
                .with_fixed(self.sets).pinned(self.source_sha256))

    def save(self) -> None:
        results.write_text(plan_path(self.results_dir, self.name), json.dumps(asdict(self), indent=2) + "\n")


def plan_path(results_dir: str | Path, name: str) -> str:
    return results.join(results.normalize(str(results_dir)), name, PLAN_FILE)


def load_plan(results_dir: str | Path, name: str, where: str = "NAME") -> SweepPlan:
    """The plan of the sweep `name`, which the command was given `where`, checked as a folder name first; every
    field of the type the plan gives it, its space a valid space, and its sqlite stores there and theirs
    (sweep.inputs.store_files): a bad plan is an InputError naming the file."""
    path = plan_path(results_dir, results.check_name(name, where))
    try:
        found = results.exists(path)
    except OSError:   # a file where a folder of the path should be
        found = False
    if not found:
        raise InputError(name, f"no sweep of that name: {path} does not exist")
    try:
        data = json.loads(read_input_text(path))
    except json.JSONDecodeError as e:
        raise InputError(path, f"not a readable sweep plan: {e}") from None
    plan = SweepPlan(**_checked_fields(data, path))
    if plan.name != name:
        raise InputError(f"{path}: name", f"the plan is of sweep {plan.name!r}, not {name!r}")
    replace(plan, space_file=f"{path}: space_text").space()
    check_sweep_stores(plan.mlflow_uri, plan.storage, bool(plan.parent_run_id), name, path)
    return plan


def _checked_fields(data: Any, path: str) -> dict[str, Any]:
    """The plan's fields from `data`, each checked against its type; a field it lacks takes its default
    (plans from before the field existed), a field the plan does not have is an error."""
    if not isinstance(data, dict):
        raise InputError(path, f"a sweep plan is a JSON object, got {type(data).__name__}")
    types = get_type_hints(SweepPlan)
    known = {f.name: f for f in fields(SweepPlan)}
    for key in data:
        if key not in known:
            raise InputError(f"{path}: {key}", "unknown field of a sweep plan (written by another version?)")
    for key, f in known.items():
        if key not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise InputError(path, f"the field {key} is missing")
        elif not _is_a(data[key], types[key]):
            kind = types[key]
            shown = str(kind).replace("typing.", "") if get_args(kind) else kind.__name__
            raise InputError(f"{path}: {key}", f"expected {shown}, got {data[key]!r}")
    return data


def _is_a(value: Any, kind: Any) -> bool:
    """`value`, read from JSON, is of the annotated type `kind`."""
    if kind is Any:
        return True
    if kind is type(None):
        return value is None
    args = get_args(kind)
    if isinstance(kind, UnionType):
        return any(_is_a(value, k) for k in args)
    origin = get_origin(kind)
    if origin is dict:
        return isinstance(value, dict) and all(_is_a(k, args[0]) and _is_a(v, args[1]) for k, v in value.items())
    if origin is list:
        return isinstance(value, list) and all(_is_a(v, args[0]) for v in value)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
