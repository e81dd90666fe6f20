"""`python -m trainer export RUN_DIR [key=value ...]`: export and evaluate the model of a finished run.

The model is rebuilt from RUN_DIR/config.yaml (overrides on top, e.g. `export.scheme=int8_zlib` or
`export.embed=int6`) and the final weights in RUN_DIR/model.pt. The artifact is written into RUN_DIR, the
reference lines are printed and appended to RUN_DIR/train.log, and an `export` event is appended to
RUN_DIR/events.jsonl. Exit codes: 0 done (also when the total does not fit), 2 bad input, 1 a crash.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from trainer import distributed, events, protocol
from trainer.config import ConfigError, load_config
from trainer.data.source import resolve_data
from trainer.evaluation import Evaluator
from trainer.export.run import export_and_evaluate
from trainer.job import run_job
from trainer.model import EMBED_WEIGHT, GPT


class RunDirError(ValueError):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainer export",
                                description="Write the int6+zstd (or int8+zlib) artifact of a finished run and "
                                            "evaluate the dequantized model on the validation split.")
    p.add_argument("run_dir", help="a run directory holding config.yaml and model.pt")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. export.embed=int6")
    return p


def _required(run_dir: Path, name: str) -> Path:
    path = run_dir / name
    if not path.is_file():
        raise RunDirError(f"{path}: missing (is {run_dir} a finished run directory?)")
    return path


def last_step(run_dir: Path) -> int | None:
    """The step of the run's last `final` event, if events.jsonl has one."""
    path = run_dir / protocol.EVENTS_FILE
    step = None
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (isinstance(record, dict) and record.get("event") == protocol.FINAL
                    and isinstance(record.get("step"), int)):
                step = record["step"]
    return step


def _load_weights(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for unreadable or foreign files
        raise RunDirError(f"{path}: not a readable state dict ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunDirError(f"{path}: not a state dict of tensors")
    return state


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    run_dir = Path(args.run_dir)
    try:
        if not run_dir.is_dir():
            raise RunDirError(f"{run_dir}: no such run directory")
        config_file = _required(run_dir, protocol.CONFIG_FILE)
        cfg = load_config(None, config_file, args.overrides, world_size=distributed.world_size_from_env())
        if not (run_dir / protocol.MODEL_FILE).is_file() and not cfg.train.save_model:
            raise RunDirError(f"{run_dir / protocol.MODEL_FILE}: missing, the run was trained with "
                              "train.save_model=false; nothing to export")
        state = _load_weights(_required(run_dir, protocol.MODEL_FILE))
    except (RunDirError, ConfigError) as e:
        events.stderr(f"export: {e}")
        return protocol.EXIT_BAD_INPUT
    return _export(cfg, run_dir, state)


def _export(cfg, run_dir: Path, state: dict) -> int:
    def export(d: distributed.Dist, log: events.RunLog) -> GPT:
        evaluator = Evaluator(cfg, d, resolve_data(cfg, d))
        model = GPT.from_config(cfg, untied=EMBED_WEIGHT in state).to(d.device)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise RunDirError(f"{run_dir / protocol.MODEL_FILE} does not match the model of the config: {e}") from None
        export_and_evaluate(model, cfg, run_dir, evaluator.evaluate, log=log, step=last_step(run_dir))
        return model

    code, message = run_job(cfg.device, run_dir, export, bad_input=(RunDirError,))
    if code != protocol.EXIT_OK:
        events.stderr(f"export: {message}")
    return code
