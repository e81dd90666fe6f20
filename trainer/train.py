"""The training run: data, model, optimizers, schedule, validation and the run directory protocol."""
from __future__ import annotations

import contextlib
import copy
import math
import os
import resource
from pathlib import Path

import torch
import torch.distributed as dist

from trainer import distributed, events, protocol, schedule
from trainer.clock import TrainingClock
from trainer.config import Config, to_yaml
from trainer.data.loader import TrainLoader
from trainer.data.source import resolve_data
from trainer.evaluation import Evaluator, ValResult, compute_dtype
from trainer.export.run import export_and_evaluate
from trainer.fp8.op import observe
from trainer.fp8.ranges import RangeStats, event_fields
from trainer.model import GPT, parameter_groups
from trainer.optim.dist_adam import DistAdam
from trainer.optim.muon import Muon
from trainer.provenance import git_sha


def peak_mem_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


class Trainer:
    def __init__(self, cfg: Config, d: distributed.Dist, log: events.RunLog):
        self.cfg, self.dist, self.log = cfg, d, log
        torch.manual_seed(cfg.seed)
        self.data = resolve_data(cfg, d)
        # Shard headers and sizes are checked here, before the model is built, not halfway through training.
        t = cfg.train
        self.loader = TrainLoader(self.data.path, d.rank, d.world_size, t.batch_tokens, t.seq_len, t.micro_batches)
        self.evaluator = Evaluator(cfg, d, self.data)
        self.autocast_dtype = compute_dtype(d.device)
        self.model = GPT.from_config(cfg).to(d.device)
        # The training loss is a mean over each rank's tokens of a step; the head's fp8 gradient scale is
        # given for the summed loss, as upstream's is (docs/fp8.md).
        self.model.set_fp8(cfg.fp8.enabled, cfg.fp8.x_s, cfg.fp8.w_s, cfg.fp8.grad_s,
                           loss_tokens=t.batch_tokens / d.world_size)
        # With end values the scales move every step; otherwise the buffers keep what set_fp8 filled in.
        self.fp8_scheduled = any(cfg.fp8[f"{k}_end"] is not None for k in ("x_s", "w_s", "grad_s"))
        self.forward = self._compiled(self.model) if cfg.compile.enabled else self.model
        groups = parameter_groups(self.model)
        o = cfg.optim
        adam_groups = [
            {"params": groups["head"], "lr": o.tied_embed_lr, "name": "head"},
            {"params": groups["control"], "lr": o.scalar_lr, "name": "control"},
        ]
        self.adam = DistAdam(adam_groups, betas=(o.beta1, o.beta2), eps=o.eps)
        self.muon = Muon(groups["matrix"], lr=o.matrix_lr, momentum=o.muon_momentum, ns_steps=o.muon_ns_steps,
                         weight_decay=o.muon_weight_decay)
        for opt in (self.adam, self.muon):
            for group in opt.param_groups:
                group["base_lr"] = group["lr"]

    def _compiled(self, model: GPT):
        if self.cfg.compile.cache_dir:
            # Inductor reads these when it first compiles: every trial pointed at one folder reuses the
            # kernels and graphs of the trials before it.
            cache = Path(self.cfg.compile.cache_dir).resolve()
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)
            os.environ["TRITON_CACHE_DIR"] = str(cache / "triton")
        return torch.compile(model, dynamic=False)

    def warmup(self, steps: int) -> None:
        """Run `steps` training steps to compile and warm up kernels, then restore the initial state, so
        compilation never counts against the training time or the wallclock cap."""
        if steps <= 0:
            return
        model_state = copy.deepcopy(self.model.state_dict())
        opt_states = [copy.deepcopy(opt.state_dict()) for opt in (self.adam, self.muon)]
        for _ in range(steps):
            self.train_step(1.0, self.cfg.optim.muon_momentum_warmup_start)
        self.model.load_state_dict(model_state)
        for opt, state in zip((self.adam, self.muon), opt_states):
            opt.load_state_dict(state)
        self.loader.step = 0

    def untie(self) -> None:
        """Give the input embedding its own weight and the LM head's Adam state, then train them apart."""
        embed = self.model.untie()
        o = self.cfg.optim
        self.adam.add_param(embed, lr=o.embed_lr, copy_state_from=self.model.lm_head.weight, name="embed",
                            base_lr=o.embed_lr)
        for group in self.adam.param_groups:
            if group["name"] == "head":
                group["base_lr"] = o.head_lr

    def train_step(self, lr_mul: float, momentum: float) -> torch.Tensor:
        for opt in (self.adam, self.muon):
            opt.zero_grad(set_to_none=True)
        micro = self.loader.next_batch()
        total = torch.zeros((), device=self.dist.device)
        for i, (x, y) in enumerate(micro):
            last = i == len(micro) - 1
            self.adam.set_grad_sync(last)
            self.muon.set_grad_sync(last)
            x, y = x.to(self.dist.device, non_blocking=True), y.to(self.dist.device, non_blocking=True)
            with torch.autocast(self.dist.device.type, dtype=self.autocast_dtype,
                                enabled=self.autocast_dtype != torch.float32):
                loss = self.forward(x, y, self.autocast_dtype)
            (loss / len(micro)).backward()
            total += loss.detach()
        for opt in (self.adam, self.muon):
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * lr_mul
        for group in self.muon.param_groups:
            group["momentum"] = momentum
        self.adam.step()
        self.muon.step()
        return total / len(micro)

    def evaluate(self) -> ValResult:
        return self.evaluator.evaluate(self.model, self.forward)

    def fp8_scales(self, frac: float) -> tuple[float, float, float]:
        """The scales in effect at training progress `frac` (each moves linearly to its end value)."""
        f = self.cfg.fp8
        return tuple(schedule.linear(f[k], f[f"{k}_end"], frac) for k in ("x_s", "w_s", "grad_s"))

    def _fp8_measured(self, step: int) -> bool:
        """Whether training step `step` + 1 has its FP8 casts measured: every fp8.stats_every steps
        (by default the train.log_every steps) and the first step."""
        f = self.cfg.fp8
        every = self.cfg.train.log_every if f.stats_every < 0 else f.stats_every
        return f.enabled and every > 0 and (step == 0 or (step + 1) % every == 0)

    def _agreed(self, values: list[float], op=dist.ReduceOp.MAX) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.dist.device)
        return distributed.all_reduce_(t, op).tolist()

    def run(self, on_fp8_range=None) -> dict:
        """Train, validate and export. `on_fp8_range(step, scales, stats, figures)` is called for each
        measured step with its `RangeStats` and their figures (the calibration reads their samples)."""
        self._announce()
        self.warmup(self.cfg.compile.warmup_steps)
        step, status, val, train_ms = self._train(on_fp8_range)
        return self._finish(step, status, val, train_ms)

    def _announce(self) -> None:
        """The resolved config, the `start` event and the log's first line."""
        cfg, log = self.cfg, self.log
        log.write_file(protocol.CONFIG_FILE, to_yaml(cfg))
        log.event(protocol.START, config=cfg, world_size=self.dist.world_size, device=str(self.dist.device),
                  torch_version=torch.__version__, git_sha=git_sha())
        log.line(f"world_size:{self.dist.world_size} device:{self.dist.device} torch:{torch.__version__} "
                 f"params:{sum(p.numel() for p in self.model.parameters())}")

    def _train(self, on_fp8_range) -> tuple[int, str, ValResult, float]:
        """The training loop, up to the last step or the wallclock cap, or until the loss is not finite.
        Returns (steps trained, final status, the last validation, training time in ms)."""
        t, log = self.cfg.train, self.log
        total = t.iterations
        cap_ms = t.max_wallclock_seconds * 1000.0
        step, status = 0, protocol.OK
        stop_after = False
        val = ValResult(float("nan"), None)
        clock = TrainingClock(self.dist.device, self._sync)
        clock.start()
        while True:
            # One elapsed time per step, agreed by all ranks, for every decision that must be the same on
            # all of them: the wallclock stop, the untie step, the LR, the FP8 scales.
            elapsed = clock.agreed_ms() if cap_ms > 0 else clock.elapsed_ms()
            if cap_ms > 0 and step > 0 and not stop_after and elapsed >= cap_ms:
                stop_after, status = True, protocol.WALLCLOCK_CAP
                log.line(f"stopping_early: {protocol.WALLCLOCK_CAP} train_time:{elapsed:.0f}ms step:{step}/{total}")
            last = step == total or stop_after
            if not last and self.model.tied and schedule.untie_due(
                    step, t.untie_frac, schedule.estimated_total_steps(step, total, elapsed, cap_ms)):
                self.untie()
                log.event(protocol.UNTIE, step=step)
                log.line(f"untie step:{step}/{total}")
            if last or (t.val_every > 0 and step > 0 and step % t.val_every == 0):
                val = self._validate(step, clock)
            if last:
                break
            loss = self._scheduled_step(step, elapsed, cap_ms, on_fp8_range)
            step += 1
            logging_step = t.log_every > 0 and (step % t.log_every == 0 or step <= 5)
            if logging_step or step == total:
                train_loss = self._report_train(step, loss, clock)
                if not math.isfinite(train_loss):
                    status = protocol.DIVERGED
                    log.line(f"diverged: non-finite train_loss at step:{step}/{total}")
                    break
        clock.pause()
        return step, status, val, clock.elapsed_ms()

    def _validate(self, step: int, clock: TrainingClock) -> ValResult:
        """Evaluate on the validation split, with the clock paused, and report it as a `val` event."""
        clock.pause()
        val = self.evaluate()
        train_ms = clock.elapsed_ms()
        avg = train_ms / max(step, 1)
        self.log.event(protocol.VAL, step=step, val_loss=val.loss, val_bpb=val.bpb, train_time_ms=train_ms,
                       step_avg_ms=avg)
        self.log.line(events.val_line(step, self.cfg.train.iterations, val.loss, val.bpb, train_ms, avg))
        clock.start()
        return val

    def _scheduled_step(self, step: int, elapsed: float, cap_ms: float, on_fp8_range) -> torch.Tensor:
        """Training step `step` + 1 at the LR, momentum and FP8 scales the schedule gives it, its FP8
        casts measured when they are due; returns its loss on this rank."""
        cfg = self.cfg
        total = cfg.train.iterations
        lr_mul = schedule.lr_multiplier(step, total, cfg.train.warmdown_iters, elapsed, cap_ms)
        momentum = schedule.muon_momentum(step, cfg.optim.muon_momentum_warmup_start, cfg.optim.muon_momentum,
                                          cfg.optim.muon_momentum_warmup_steps)
        scales = self.fp8_scales(schedule.progress(step, total, elapsed, cap_ms))
        if self.fp8_scheduled:
            self.model.lm_head.set_fp8_scales(*scales)
        stats = RangeStats(self.dist.device, seed=step) if self._fp8_measured(step) else None
        with observe(stats) if stats is not None else contextlib.nullcontext():
            loss = self.train_step(lr_mul, momentum)
        if stats is not None:
            figures = self._report_fp8(step + 1, total, scales, stats)
            if on_fp8_range is not None:
                on_fp8_range(step + 1, scales, stats, figures)
        return loss

    def _report_train(self, step: int, loss: torch.Tensor, clock: TrainingClock) -> float:
        """Report the loss of step `step`, averaged over the ranks, as a `train` event; returns it."""
        (train_loss,) = self._agreed([loss.item()], dist.ReduceOp.SUM)
        train_loss /= self.dist.world_size
        now = clock.elapsed_ms()
        total = self.cfg.train.iterations
        self.log.event(protocol.TRAIN, step=step, total_steps=total, train_loss=train_loss, train_time_ms=now,
                       step_avg_ms=now / step, tokens=step * self.cfg.train.batch_tokens)
        self.log.line(events.train_line(step, total, train_loss, now, now / step))
        return train_loss

    def _finish(self, step: int, status: str, val: ValResult, train_ms: float) -> dict:
        """Save the weights, export unless the run diverged, and end with the `final` event, which it returns."""
        cfg, log = self.cfg, self.log
        if status == protocol.DIVERGED:
            val = ValResult(float("nan"), None)
        final = {"step": step, "val_loss": val.loss, "val_bpb": val.bpb, "train_time_ms": train_ms,
                 "step_avg_ms": train_ms / max(step, 1), "peak_mem_mib": peak_mem_mib(self.dist.device),
                 "status": status}
        log.line(f"peak memory allocated: {final['peak_mem_mib']:.0f} MiB")
        if cfg.train.save_model and self.dist.is_main and log.run_dir is not None:
            torch.save(self.model.state_dict(), log.run_dir / protocol.MODEL_FILE)
        if cfg.export.enabled and status != protocol.DIVERGED and log.run_dir is not None:
            # Before `final`, so a reader that stops at `final` has the export too.
            export_and_evaluate(self.model, cfg, log.run_dir, self.evaluator.evaluate, log=log, step=step)
        log.event(protocol.FINAL, **final)
        return final

    def _report_fp8(self, step: int, total: int, scales: tuple[float, float, float],
                    stats: RangeStats) -> dict[str, dict[str, float]]:
        figures = stats.figures()
        x_s, w_s, grad_s = scales
        self.log.event(protocol.FP8, step=step, x_s=x_s, w_s=w_s, grad_s=grad_s, **event_fields(figures))
        self.log.line(events.fp8_line(step, total, scales, figures))
        return figures

    def _sync(self) -> None:
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize(self.dist.device)
