"""Export a trained model and evaluate its round trip: the end-of-run step when `export.enabled` is on.

Rank 0 quantizes and writes the artifact into the run directory; then every rank reads the artifact back
into a fresh model and runs the run's validation (`trainer.evaluation`) on it, so the reported loss is the loss of the
file that would be submitted. Sizes and round-trip metrics go to the `export` event and to train.log in
the parameter-golf line shapes. A total over `export.max_bytes` is a result (`fits: false`), not an error.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from trainer import distributed
from trainer.config import Config
from trainer.events import RunLog
from trainer.export.accounting import SizeReport, size_report
from trainer.export.artifact import ArtifactInfo, load_artifact, save_artifact
from trainer.export.schemes import get_scheme
from trainer.model import GPT
from trainer.protocol import ARTIFACT_FILES, EXPORT

# `evaluate(model)` runs the validation on `model` on every rank and returns an object with `.loss` and
# `.bpb` (bpb None without a tokenizer): `trainer.evaluation.Evaluator.evaluate`.
Evaluate = Callable[[nn.Module], Any]


def artifact_path(run_dir: str | Path, scheme: str) -> Path:
    get_scheme(scheme)
    return Path(run_dir) / ARTIFACT_FILES[scheme]


def fresh_model_like(model: GPT, cfg: Config) -> GPT:
    """A newly built model with the same architecture, tying and device as `model`."""
    device = next(model.parameters()).device
    return GPT.from_config(cfg, untied=not model.tied).to(device)


def reference_lines(info: ArtifactInfo, sizes: SizeReport, val_loss: float, val_bpb: float | None,
                    eval_ms: float) -> list[str]:
    """The parameter-golf log lines for an export, e.g. `Serialized model int6+zstd: N bytes (...)` and
    `final_int6_zstd_roundtrip_exact val_loss:... val_bpb:...`."""
    scheme = get_scheme(info.scheme)
    counts = " ".join(f"{k}:{v}" for k, v in sorted(info.tensor_counts.items()))
    tag = scheme.eval_label
    bpb4 = f" val_bpb:{val_bpb:.4f}" if val_bpb is not None else ""
    bpb8 = f" val_bpb:{val_bpb:.8f}" if val_bpb is not None else ""
    return [
        f"Serialized model {scheme.label}: {info.artifact_bytes} bytes "
        f"(payload:{info.payload_bytes} embed:{info.embed} {counts})",
        f"Code size: {sizes.code_bytes} bytes",
        f"Total submission size {scheme.label}: {sizes.total_bytes} bytes",
        f"export_size total_bytes:{sizes.total_bytes} max_bytes:{sizes.max_bytes} fits:{str(sizes.fits).lower()}",
        f"{tag} val_loss:{val_loss:.4f}{bpb4} eval_time:{eval_ms:.0f}ms",
        f"{tag}_exact val_loss:{val_loss:.8f}{bpb8}",
    ]


def export_and_evaluate(model: GPT, cfg: Config, run_dir: str | Path, evaluate: Evaluate,
                        log: RunLog | None = None, step: int | None = None) -> dict[str, Any]:
    """Write `run_dir/model.int6.ptz` (or `model.int8.ptz` for `export.scheme=int8_zlib`) from `model`,
    load it back into a fresh model, evaluate that with `evaluate` (eagerly: a compiled forward belongs to
the trained model), and return the `export` event fields:

    artifact (file name), scheme, embed, artifact_bytes, payload_bytes, code_bytes, total_bytes, max_bytes,
    fits, roundtrip_val_loss, roundtrip_val_bpb, score_label (the evaluation's label in the log, e.g.
    `final_int6_zstd_roundtrip`), compress_seconds, load_seconds, eval_time_ms, and `step`
    when given (an empty dict on ranks other than 0).

    Call it on every rank (the evaluation is collective); rank 0 writes the file. When `log` is given, the
    reference lines go to train.log and the `export` event to events.jsonl (RunLog is silent off rank 0),
    so the caller emits nothing itself. `model` is left untouched.
    """
    export = cfg.export
    path = artifact_path(run_dir, export.scheme)
    info = error = None
    if not dist.is_initialized() or dist.get_rank() == 0:
        try:
            info = save_artifact(model.state_dict(), path, scheme=export.scheme, embed=export.embed)
        except (ValueError, OSError) as e:
            error = e
    # Doubles as the barrier before the other ranks read the file, and keeps them from waiting forever
    # for a file that rank 0 failed to write.
    failed = torch.tensor([float(error is not None)], device=next(model.parameters()).device)
    distributed.all_reduce_(failed, op=dist.ReduceOp.MAX)
    if error is not None:
        raise error
    if failed.item():
        raise RuntimeError("the export failed on rank 0")

    start = time.perf_counter()
    fresh = fresh_model_like(model, cfg)
    fresh.load_state_dict(load_artifact(path), strict=True)
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = evaluate(fresh)
    eval_ms = 1000.0 * (time.perf_counter() - start)
    if info is None:
        return {}

    sizes = size_report(info.artifact_bytes, export.max_bytes)
    fields: dict[str, Any] = {} if step is None else {"step": step}
    fields.update(artifact=path.name, scheme=info.scheme, embed=info.embed, payload_bytes=info.payload_bytes,
                  **sizes.fields(), roundtrip_val_loss=result.loss, roundtrip_val_bpb=result.bpb,
                  score_label=get_scheme(info.scheme).eval_label,
                  compress_seconds=info.compress_seconds, load_seconds=load_seconds, eval_time_ms=eval_ms)
    if log is not None:
        for line in reference_lines(info, sizes, result.loss, result.bpb, eval_ms):
            log.line(line)
        log.event(EXPORT, **fields)
    return fields
