"""Command line: `python -m trainer` (or under torchrun) trains; `data` and `export` are subcommands."""
from __future__ import annotations

import argparse
import sys
import time

from trainer import distributed, events
from trainer.config import ConfigError, load_config, preset_names, to_yaml
from trainer.job import run_job
from trainer.protocol import ERROR, EXIT_BAD_INPUT, EXIT_OK


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train a GPT. Subcommands: `data` (corpus and shards), `export` (int6 artifact of a run), "
                    "`fp8 calibrate` (propose FP8 scales from a probe run).",
        epilog="Extra arguments are config overrides key=value; precedence: preset < --config < overrides.")
    p.add_argument("--preset", choices=preset_names())
    p.add_argument("--config", help="YAML file of config keys")
    p.add_argument("--run-dir", help="where events.jsonl, train.log, config.yaml and model.pt go")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "data":
        from trainer.data.cli import main as data_main
        return data_main(argv[1:])
    if argv and argv[0] == "export":
        from trainer.export.cli import main as export_main
        return export_main(argv[1:])
    if argv and argv[0] == "fp8":
        from trainer.fp8.calibrate import main as fp8_main
        return fp8_main(argv[1:])
    args = _parser().parse_args(argv)
    world_size = distributed.world_size_from_env()
    run_dir = args.run_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        cfg = load_config(args.preset, args.config, args.overrides, world_size=world_size)
    except ConfigError as e:
        return _fail(None if args.print_config else run_dir, f"config error: {e}", EXIT_BAD_INPUT)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    return _train(cfg, run_dir)


def _fail(run_dir: str | None, message: str, code: int) -> int:
    if run_dir is not None and distributed.int_env("RANK") == 0:
        log = events.RunLog(run_dir, active=True, echo=False)
        log.event(ERROR, message=message)
        log.close()
    events.stderr(message)
    return code


def _train(cfg, run_dir: str) -> int:
    from trainer.train import Trainer

    def train(d: distributed.Dist, log: events.RunLog) -> Trainer:
        trainer = Trainer(cfg, d, log)
        trainer.run()
        return trainer

    code, message = run_job(cfg.device, run_dir, train)
    return code if code == EXIT_OK else _fail(run_dir, message, code)
