"""Search space files (docs/spaces.md, "Search space files"): loading, and every check made before a node is reserved.

```yaml
name: fp8_scales
metric: val_loss          # objective.METRICS, or eval.<label>.val_bpb / .val_loss (sweep.inputs.objective)
mode: min
preset: speedrun          # optional with a trainer command
trainer:                  # optional, another program (sweep.inputs.trainer_spec)
  command: torchrun --standalone --nproc_per_node=8 train_gpt.py
  params: env             # env: keys are environment variables; args (default): key=value arguments;
                          # source: keys are sites in the script (sweep.source_sites)
  env: {DATA_PATH: ./data/datasets/fineweb10B_sp1024/}
params:                   # config key (env mode: environment variable) -> distribution
  fp8.x_s: {type: float, low: 0.02, high: 2.0, log: true}
  train.warmdown_iters: {type: int, low: 200, high: 1400, step: 50}
  export.embed: {type: categorical, choices: [fp16, int8]}
fixed: {fp8.enabled: true}
points_to_evaluate:       # run first, in this order
  - {fp8.x_s: 0.2232}
target: 3.28              # only for metric time_to_target
diverged_value: 1.0e6     # optional, see sweep.objective
confirm: {top: 2, seeds: 8, min_effect: 0.002}   # optional: what `sweep run --confirm` does by default
seed: Hyperparameters.seed    # source mode only: the site of the script's seed, if it has one
```

In source mode a param may also give `expr: "grad_scale * {}"`, the code its value is written into.

For the built-in trainer, keys are checked against the trainer's schema (`trainer/presets/base.yaml`) and
every point the file names, every choice, both ends of every range and every value of a small int range
(a spread sample of a large one) is resolved by the trainer's own config loader, so a value the trainer
would refuse at launch is refused here instead. For another program in env mode,
keys must be environment variable names, and `sweep.inputs.script_keys` checks that its script reads them; in
source mode they are site addresses, which `sweep run` resolves in the script.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import optuna.distributions as d
import yaml

from sweep.errors import InputError
from sweep.inputs.input_files import read_input_text
from sweep.inputs.objective import OBJECTIVE_MODES, Objective, check_metric
from sweep.inputs.overrides import format_overrides
from sweep.inputs.resources import MAX_CONFIRMED, MAX_SEEDS, in_range
from sweep.inputs.source_sites import check_address, check_template
from sweep.inputs.trainer_spec import TrainerSpec, parse_trainer_block
from trainer.config import ConfigError, flatten, load_config, preset_names, unknown_key_message
from trainer.export.schemes import get_scheme

TOP_KEYS = ("name", "metric", "mode", "preset", "trainer", "params", "fixed", "points_to_evaluate", "target",
            "diverged_value", "confirm", "seed")
CONFIRM_KEYS = ("top", "seeds", "min_effect", "fixed")   # the `confirm:` block (`sweep run --confirm ...`)
CONFIRM_COUNTS = {"top": (1, MAX_CONFIRMED), "seeds": (2, MAX_SEEDS)}   # its integers and their ranges
PARAM_KEYS = {"float": ("type", "low", "high", "log", "step", "expr"),
              "int": ("type", "low", "high", "log", "step", "expr"), "categorical": ("type", "choices", "expr")}
SMALL_INT_RANGE = 64   # an int range with at most this many values is checked value by value
PROBE_SAMPLE = 64      # values checked across a larger int range


@dataclass(frozen=True)
class Param:
    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()
    expr: str = ""               # source mode: the code the value is written into, `{}` where it goes

    def distribution(self) -> d.BaseDistribution:
        if self.type == "float":
            return d.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return d.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return d.CategoricalDistribution(list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return any(value == c and type(value) is type(c) for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type == "int" and not float(value).is_integer():
            return False
        return self.low <= value <= self.high

    def probes(self) -> list[Any]:
        """Values worth resolving with the trainer: every choice; every value of an int range of at most
        SMALL_INT_RANGE values, else both ends and PROBE_SAMPLE values spread over it (evenly, or evenly in
        log space for a log range), since a shape constraint (heads dividing the width) can refuse a value
        inside a range whose ends pass; both ends of a float range, where the trainer checks bounds only."""
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "float":
            return [self.low, self.high]
        step = self.step or 1
        count = (self.high - self.low) // step + 1
        if count <= SMALL_INT_RANGE:
            return list(range(self.low, self.high + 1, step))
        if self.log:
            ratio = self.high / self.low
            spread = [self.low * ratio ** (i / (PROBE_SAMPLE - 1)) for i in range(PROBE_SAMPLE)]
        else:
            spread = [self.low + (self.high - self.low) * i / (PROBE_SAMPLE - 1) for i in range(PROBE_SAMPLE)]
        on_grid = {min(self.high, self.low + round((v - self.low) / step) * step) for v in spread}
        return sorted(on_grid | {self.low, self.high})


@dataclass
class SearchSpace:
    name: str
    objective: Objective
    preset: str
    params: dict[str, Param]
    fixed: dict[str, Any] = field(default_factory=dict)
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)
    trainer: TrainerSpec = field(default_factory=TrainerSpec)
    confirm: dict[str, Any] = field(default_factory=dict)   # the `confirm:` block: top, seeds, min_effect, fixed
    seed_site: str = ""          # `seed:`, the site of the script's seed (source mode)
    source: str = ""
    text: str = ""
    fixed_from: dict[str, str] = field(default_factory=dict)  # fixed keys set outside the file: key -> `--set KEY`

    @property
    def metric(self) -> str:
        return self.objective.metric

    @property
    def mode(self) -> str:
        return self.objective.mode

    def with_fixed(self, extra: dict[str, Any], where: str = "--set") -> "SearchSpace":
        """The same space with more fixed keys (later ones win); a swept key cannot be fixed."""
        for key in extra:
            if key in self.params:
                raise InputError(where, f"{key} is a swept parameter of {self.source} and cannot be fixed")
        self._check_keys_for_trainer(extra, where)
        return replace(self, fixed={**self.fixed, **extra},
                       fixed_from={**self.fixed_from, **{key: f"{where} {key}" for key in extra}})

    def where(self, key: str) -> str:
        """Where the user wrote a swept or fixed key, for an error about it: `space.yaml: params.KEY`,
        `space.yaml: fixed.KEY` or `--set KEY`."""
        if key in self.fixed_from:
            return self.fixed_from[key]
        return f"{self.source}: {'params' if key in self.params else 'fixed'}.{key}"

    def with_trainer(self, command: str | None = None, params: str | None = None) -> "SearchSpace":
        """The same space run by `command` with `params` (None: as the file says), checked for that trainer."""
        where = f"{self.source}: trainer.params" if params is None else "--trainer-params"
        trainer = replace(self.trainer, command=self.trainer.command if command is None else command,
                          params=self.trainer.params if params is None else params, seed_site=self.seed_site,
                          exprs={k: p.expr for k, p in self.params.items() if p.expr})
        if trainer.env_mode and not trainer.command:
            raise InputError(where, "env mode passes the keys as environment variables to another program: "
                                    "name it with trainer.command or --trainer-cmd")
        if trainer.source_mode and not trainer.command:
            raise InputError(where, "source mode writes the keys into the script another program runs: name "
                                    "it with trainer.command or --trainer-cmd")
        if not trainer.source_mode:
            if self.seed_site:
                raise InputError(f"{self.source}: seed", f"names the seed's site in the script, which only "
                                                         f"source mode has (this space runs in {trainer.params} mode)")
            for key in trainer.exprs:
                raise InputError(f"{self.source}: params.{key}.expr", f"a template is for source mode (this space "
                                                                      f"runs in {trainer.params} mode)")
        if not trainer.command and not self.preset:
            raise InputError(f"{self.source}: preset", f"the built-in trainer needs a preset "
                                                       f"(known: {', '.join(preset_names())})")
        space = replace(self, trainer=trainer)
        space._check_keys_for_trainer(space.params, f"{self.source}: params")
        space._check_keys_for_trainer(space.fixed, f"{self.source}: fixed")
        return space

    def _check_keys_for_trainer(self, keys: dict[str, Any], where: str) -> None:
        for key in keys:
            self.trainer.check_key(key, where)
            if self.trainer.env_mode and key in self.trainer.env:
                raise InputError(where, f"{key} is also set in trainer.env; set it in one place")

    def pinned(self, script_sha256: str) -> "SearchSpace":
        """The same space, its trials editing only the script whose sha256 this is (source mode)."""
        return replace(self, trainer=replace(self.trainer, script_sha256=script_sha256))

    def distributions(self) -> dict[str, Any]:
        return {key: p.distribution() for key, p in self.params.items()}

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """Fixed keys then the given swept values, as trainer overrides."""
        return format_overrides(self.fixed, values)


def _number(value: Any, where: str, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(where, f"expected a finite number, got {value!r}")
    if integer:
        if not float(value).is_integer():
            raise InputError(where, f"expected an integer, got {value!r}")
        return int(value)
    return float(value)


def _param(key: str, spec: Any, where: str) -> Param:
    if not isinstance(spec, dict):
        raise InputError(where, "must be a mapping like {type: float, low: ..., high: ...}")
    kind = spec.get("type")
    if kind not in PARAM_KEYS:
        raise InputError(f"{where}.type", f"must be one of {', '.join(PARAM_KEYS)}, got {kind!r}")
    for extra in spec:
        if extra not in PARAM_KEYS[kind]:
            raise InputError(f"{where}.{extra}", f"unknown field for a {kind} parameter "
                                                 f"(known: {', '.join(PARAM_KEYS[kind])})")
    expr = "" if "expr" not in spec else check_template(spec["expr"], f"{where}.expr")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise InputError(f"{where}.choices", "must be a non-empty list")
        for c in choices:
            if not isinstance(c, (bool, int, float, str)):
                raise InputError(f"{where}.choices", f"{c!r} is not a single value")
        if len({(type(c), c) for c in choices}) != len(choices):
            raise InputError(f"{where}.choices", "lists a value twice")
        return Param(key, kind, choices=tuple(choices), expr=expr)
    integer = kind == "int"
    for bound in ("low", "high"):
        if bound not in spec:
            raise InputError(where, f"a {kind} parameter needs `{bound}`")
    low = _number(spec["low"], f"{where}.low", integer)
    high = _number(spec["high"], f"{where}.high", integer)
    if not low < high:
        raise InputError(where, f"bad bounds: low ({low}) must be below high ({high})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise InputError(f"{where}.log", f"expected true or false, got {log!r}")
    if log and low <= 0:
        raise InputError(f"{where}.low", f"a log range must stay above 0, got low={low}")
    step = spec.get("step")
    if step is not None:
        step = _number(step, f"{where}.step", integer)
        if step <= 0:
            raise InputError(f"{where}.step", f"must be > 0, got {step}")
        if log:
            raise InputError(f"{where}.step", "cannot be combined with log: true")
        if integer and (high - low) % step:
            raise InputError(f"{where}.step", f"{high - low} (high - low) is not a multiple of {step}")
    return Param(key, kind, low=low, high=high, log=log, step=step, expr=expr)


def _confirm_item(key: str, item: Any, where: str) -> Any:
    if key == "fixed":
        if not isinstance(item, bool):
            raise InputError(where, f"expected true or false, got {item!r}")
        return item
    if key == "min_effect":
        number = _number(item, where)
        if number <= 0:
            raise InputError(where, f"must be above 0 (an improvement, in the metric's units), got {number}")
        return number
    number = _number(item, where, integer=True)
    return in_range(number, where, *CONFIRM_COUNTS[key])


def _confirm_block(value: Any, source: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{source}: confirm", "must be a mapping like {top: 2, seeds: 8, min_effect: 0.002}")
    for key in value:
        if key not in CONFIRM_KEYS:
            raise InputError(f"{source}: confirm.{key}", f"unknown field (known: {', '.join(CONFIRM_KEYS)})")
    return {key: _confirm_item(key, item, f"{source}: confirm.{key}") for key, item in value.items()}


def _objective(data: dict, source: str) -> Objective:
    metric = data.get("metric")
    check_metric(metric, f"{source}: metric")
    mode = data.get("mode", "min")
    if mode not in OBJECTIVE_MODES:
        raise InputError(f"{source}: mode", f"must be min or max, got {mode!r}")
    target = data.get("target")
    if metric == "time_to_target":
        if target is None:
            raise InputError(f"{source}: target", "metric time_to_target needs a target val_loss")
        target = _number(target, f"{source}: target")
    elif target is not None:
        raise InputError(f"{source}: target", "only used with metric time_to_target")
    diverged = data.get("diverged_value")
    if diverged is not None:
        diverged = _number(diverged, f"{source}: diverged_value")
    return Objective(metric, mode, target, diverged)


def _mapping(data: dict, key: str, where: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: {key}", "must be a mapping of config keys")
    return value


def _points(data: dict, params: dict[str, Param], source: str) -> list[dict[str, Any]]:
    points = data.get("points_to_evaluate") or []
    if not isinstance(points, list):
        raise InputError(f"{source}: points_to_evaluate", "must be a list of mappings")
    for i, point in enumerate(points):
        where = f"{source}: points_to_evaluate[{i}]"
        if not isinstance(point, dict):
            raise InputError(where, "must be a mapping of swept keys to values")
        for key, value in point.items():
            if key not in params:
                close = difflib.get_close_matches(key, list(params), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise InputError(f"{where}.{key}", f"is not a swept parameter of this space{hint}")
            if not params[key].contains(value):
                raise InputError(f"{where}.{key}", f"{value!r} lies outside the parameter's range or choices")
        missing = [k for k in params if k not in point]
        if missing:
            raise InputError(where, f"gives no value for {', '.join(missing)}")
    return [dict(p) for p in points]


def _seed_site(data: dict, params: dict[str, Param], fixed: dict[str, Any], source: str) -> str:
    site = data.get("seed") or ""
    if site:
        check_address(site, f"{source}: seed")
        for section, keys in (("params", params), ("fixed", fixed)):
            if site in keys:
                raise InputError(f"{source}: seed", f"{site} is also in {section}; the seed's site is what "
                                                    f"confirmation and verify runs set")
    return site


def parse_space(text: str, source: str) -> SearchSpace:
    """Parse and structurally check a space; `source` names it in errors (usually the file path)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(source, f"not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise InputError(source, "a search space must be a YAML mapping")
    for key in data:
        if key not in TOP_KEYS:
            raise InputError(f"{source}: {key}", f"unknown field (known: {', '.join(TOP_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise InputError(f"{source}: name", f"must be a name of letters, digits, '-', '_' or '.', got {name!r}")
    objective = _objective(data, source)
    preset = data.get("preset") or ""
    if preset and preset not in preset_names():
        raise InputError(f"{source}: preset", f"unknown preset {preset!r} (known: {', '.join(preset_names())})")
    trainer = parse_trainer_block(data.get("trainer"), source)
    check_name = trainer.check_key

    raw_params = _mapping(data, "params", source)
    if not raw_params:
        raise InputError(f"{source}: params", "a search space needs at least one parameter")
    params = {}
    for key, spec in raw_params.items():
        check_name(key, f"{source}: params")
        params[key] = _param(key, spec, f"{source}: params.{key}")
    fixed = _mapping(data, "fixed", source)
    for key, value in fixed.items():
        check_name(key, f"{source}: fixed")
        if key in params:
            raise InputError(f"{source}: fixed.{key}", "is also a swept parameter")
        if isinstance(value, (dict, list)) or value is None:
            raise InputError(f"{source}: fixed.{key}", f"expected a single value, got {value!r}")

    return SearchSpace(name=name, objective=objective, preset=preset,
                       params=params, fixed=dict(fixed), points_to_evaluate=_points(data, params, source),
                       trainer=trainer, confirm=_confirm_block(data.get("confirm"), source),
                       seed_site=_seed_site(data, params, fixed, source), source=source, text=text)


def load_space(path: str | Path) -> SearchSpace:
    return parse_space(read_input_text(path), str(path))


def check_with_trainer(space: SearchSpace, preset: str, world_size: int | None = None) -> None:
    """Resolve every point of the space and each parameter's probe values with the trainer's config loader.

    Each probe value is resolved with the other swept keys at their first point (or their first probe), so
    the check costs a few milliseconds per value rather than a grid.
    """
    schema = flatten(load_config())
    for key in [*space.params, *space.fixed]:
        if key not in schema:
            raise InputError(space.where(key), unknown_key_message(key, schema))
    base = (dict(space.points_to_evaluate[0]) if space.points_to_evaluate
            else {k: p.probes()[0] for k, p in space.params.items()})
    candidates = [(f"points_to_evaluate[{i}]", p) for i, p in enumerate(space.points_to_evaluate)]
    for key, param in space.params.items():
        candidates += [(f"params.{key} = {v!r}", {**base, key: v}) for v in param.probes()]
    for what, values in candidates:
        try:
            cfg = load_config(preset, overrides=space.overrides(values), world_size=world_size)
        except ConfigError as e:
            where = space.fixed_from.get(e.key, f"{space.source}: {what}")   # a --set value every candidate has
            raise InputError(where, f"the trainer ({preset} preset) rejects it: {e}") from None
    if space.objective.from_export and not cfg.export.enabled:
        raise InputError(f"{space.source}: metric", f"{space.metric} needs export.enabled: true")
    if space.objective.evaluation:
        label, printed = space.objective.evaluation[0], get_scheme(cfg.export.scheme).eval_label
        if label != printed:
            raise InputError(f"{space.source}: metric", f"the trainer ({preset} preset, export.scheme "
                                                        f"{cfg.export.scheme}) prints one evaluation after "
                                                        f"training, {printed}: eval.{label} never comes")
