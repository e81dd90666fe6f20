"""Trainer configuration: presets kept as YAML data, a config file, then `key=value` overrides.

`presets/base.yaml` is the schema: every key the trainer knows, with a default whose type is the type
the key must have; a `null` default makes an optional number (null or any number). Everything is
validated before any work starts; a problem raises `ConfigError` naming the key, which the CLI turns
into exit code 2.
"""
from __future__ import annotations

import copy
import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

PRESETS_DIR = resources.files("trainer") / "presets"
CHOICES = {
    "device": ("auto", "cpu", "cuda"),
    "export.scheme": ("int6_zstd", "int8_zlib"),
    "export.embed": ("fp16", "int8", "int6"),
}


class ConfigError(ValueError):
    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


class Config(dict):
    """Nested dict with attribute access: `cfg.train.iterations`."""

    def __getattr__(self, name: str) -> Any:
        try:
            value = self[name]
        except KeyError:
            raise AttributeError(name) from None
        return Config(value) if isinstance(value, dict) else value

    def get_key(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            node = node[part]
        return node


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in PRESETS_DIR.iterdir() if p.name.endswith(".yaml") and p.name != "base.yaml")


def _read_yaml(text: str, origin: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(origin, f"not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(origin, "must be a mapping of config keys")
    return data


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _coerce(key: str, value: Any, default: Any) -> Any:
    if default is None:
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, f"expected a number or null, got {value!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, f"expected a number, got {value!r}")
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}")
    raise ConfigError(key, "unsupported type in schema")


def unknown_key_message(key: str, known: Iterable[str]) -> str:
    # A high cutoff: dotted keys of one section share their prefix, which alone looks similar enough at 0.6.
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
    return f"unknown config key; did you mean {close[0]}?" if close else "unknown config key"


def _apply(target: dict, updates: dict[str, Any], schema: dict[str, Any]) -> None:
    for key, value in updates.items():
        if key not in schema:
            raise ConfigError(key, unknown_key_message(key, schema))
        node = target
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = _coerce(key, value, schema[key])


def parse_override(item: str) -> tuple[str, str]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(item, "an override must look like key=value")
    return key.strip(), raw


def _from_text(key: str, raw: str, default: Any) -> Any:
    """Read an override's text as the key's type (YAML alone would read `1e30` as a string); an empty
    text or `null` leaves an optional number unset."""
    if isinstance(default, str):
        return raw
    if default is None:
        if raw.strip().lower() in ("", "null", "none", "~"):
            return None
        default = 0.0
    if isinstance(default, bool):
        value = yaml.safe_load(raw) if raw else None
        return _coerce(key, value, default)
    try:
        return int(raw) if isinstance(default, int) else float(raw)
    except ValueError:
        return _coerce(key, raw, default)


def load_config(preset: str | None = None, config_file: str | Path | None = None,
                overrides: list[str] | tuple[str, ...] = (), world_size: int | None = None) -> Config:
    """Resolve preset < config file < overrides, then validate (for `world_size` ranks if given)."""
    base = _read_yaml((PRESETS_DIR / "base.yaml").read_text(), "base.yaml")
    schema = flatten(base)
    cfg = copy.deepcopy(base)
    if preset:
        if preset not in preset_names():
            raise ConfigError("--preset", f"unknown preset {preset!r} (known: {', '.join(preset_names())})")
        _apply(cfg, flatten(_read_yaml((PRESETS_DIR / f"{preset}.yaml").read_text(), preset)), schema)
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError("--config", f"no such file: {path}")
        _apply(cfg, flatten(_read_yaml(path.read_text(), str(path))), schema)
    parsed = dict(parse_override(o) for o in overrides)
    _apply(cfg, {k: _from_text(k, raw, schema[k]) if k in schema else raw for k, raw in parsed.items()}, schema)
    result = Config(cfg)
    validate(result, world_size)
    return result


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


def validate(cfg: Config, world_size: int | None = None) -> None:
    flat = flatten(cfg)
    for key, choices in CHOICES.items():
        _require(flat[key] in choices, key, f"must be one of {', '.join(choices)}, got {flat[key]!r}")
    for key in ("model.vocab_size", "model.num_layers", "model.model_dim", "model.num_heads",
                "model.num_kv_heads", "model.mlp_mult", "train.iterations", "train.batch_tokens",
                "train.seq_len", "train.micro_batches", "train.val_batch_tokens", "optim.muon_ns_steps"):
        _require(flat[key] >= 1, key, f"must be at least 1, got {flat[key]}")
    for key in ("train.warmdown_iters", "train.val_every", "train.log_every", "train.val_tokens",
                "train.max_wallclock_seconds", "compile.warmup_steps", "optim.muon_momentum_warmup_steps", "optim.muon_weight_decay",
                "optim.tied_embed_lr", "optim.embed_lr", "optim.head_lr", "optim.matrix_lr", "optim.scalar_lr"):
        _require(flat[key] >= 0, key, f"must not be negative, got {flat[key]}")
    for key in ("fp8.x_s_end", "fp8.w_s_end", "fp8.grad_s_end"):
        _require(flat[key] is None or flat[key] > 0, key, f"must be > 0 (or null for a constant scale), got {flat[key]}")
    _require(flat["fp8.stats_every"] >= -1, "fp8.stats_every",
             f"must be -1 (every train.log_every steps), 0 (off) or a number of steps, got {flat['fp8.stats_every']}")
    for key in ("fp8.x_s", "fp8.w_s", "fp8.grad_s", "model.rope_base", "model.logit_softcap",
                "model.tied_embed_init_std", "optim.eps", "export.max_bytes"):
        _require(flat[key] > 0, key, f"must be > 0, got {flat[key]}")
    for key in ("train.untie_frac", "optim.muon_momentum", "optim.muon_momentum_warmup_start"):
        _require(0.0 <= flat[key] <= 1.0, key, f"is a fraction and must lie in [0, 1], got {flat[key]}")
    for key in ("optim.beta1", "optim.beta2"):
        _require(0.0 <= flat[key] < 1.0, key, f"must lie in [0, 1), got {flat[key]}")

    dim, heads, kv = flat["model.model_dim"], flat["model.num_heads"], flat["model.num_kv_heads"]
    _require(dim % heads == 0, "model.num_heads", f"{heads} heads do not divide model.model_dim={dim}")
    _require((dim // heads) % 2 == 0, "model.num_heads", f"head dim {dim // heads} must be even for RoPE")
    _require(heads % kv == 0, "model.num_kv_heads", f"{kv} KV heads do not divide model.num_heads={heads}")

    seq, batch, micro = flat["train.seq_len"], flat["train.batch_tokens"], flat["train.micro_batches"]
    _require(batch % (micro * seq) == 0, "train.batch_tokens",
             f"{batch} tokens do not split into train.micro_batches={micro} micro-batches of whole "
             f"train.seq_len={seq} sequences")
    _require(flat["train.val_batch_tokens"] % seq == 0, "train.val_batch_tokens",
             f"must be a multiple of train.seq_len={seq}")
    if world_size is not None:
        _require(micro % world_size == 0, "train.micro_batches",
                 f"the batch of {micro} micro-batches does not split over {world_size} ranks")


def to_yaml(cfg: dict) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False)
