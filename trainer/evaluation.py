"""Validation: the val split and its byte tables, and a model's loss and bits per byte over it.

Used by the training loop (each `val` event and the final one) and by export (the artifact's round
trip), which needs no optimizer, no training loader and no Trainer.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainer import distributed
from trainer.config import Config, ConfigError
from trainer.data.loader import load_val_tokens, val_slices
from trainer.data.source import DataSource
from trainer.data.tokenizer import ByteLUTs, bits_per_byte, build_byte_luts, load_tokenizer, target_bytes
from trainer.model import GPT


@dataclass
class ValResult:
    loss: float
    bpb: float | None


def compute_dtype(device: torch.device) -> torch.dtype:
    """The activations' dtype: bf16 autocast on CUDA, float32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class Evaluator:
    def __init__(self, cfg: Config, d: distributed.Dist, data: DataSource):
        self.cfg, self.dist = cfg, d
        t = cfg.train
        self.tokens = load_val_tokens(data.path, t.seq_len, t.val_tokens)
        top = int(self.tokens.max())
        if top >= cfg.model.vocab_size:
            raise ConfigError("model.vocab_size", f"the validation shards in {data.path} hold token id {top}, "
                              f"outside a vocabulary of {cfg.model.vocab_size}")
        self.luts: ByteLUTs | None = None
        if data.tokenizer is not None:
            sp = load_tokenizer(data.tokenizer)
            if sp.vocab_size() > cfg.model.vocab_size:
                raise ConfigError("model.vocab_size", f"{cfg.model.vocab_size} is smaller than the tokenizer's "
                                  f"{sp.vocab_size()} pieces ({data.tokenizer})")
            self.luts = build_byte_luts(sp, cfg.model.vocab_size, d.device)

    @torch.no_grad()
    def evaluate(self, model: GPT, forward: Callable[..., torch.Tensor] | None = None) -> ValResult:
        """Loss and bits per byte of `model` over the whole validation slice, summed in float64 across
        ranks. `forward` is the model's compiled forward when there is one; a collective."""
        forward = model if forward is None else forward
        seq_len, device = self.cfg.train.seq_len, self.dist.device
        dtype = compute_dtype(device)
        seqs = val_slices((self.tokens.numel() - 1) // seq_len, self.dist.rank, self.dist.world_size)
        per_batch = max(1, self.cfg.train.val_batch_tokens // seq_len // self.dist.world_size)
        sums = torch.zeros(3, dtype=torch.float64, device=device)  # nats, tokens, bytes
        was_training = model.training
        model.eval()
        for start in range(seqs.start, seqs.stop, per_batch):
            end = min(start + per_batch, seqs.stop)
            chunk = self.tokens[start * seq_len:end * seq_len + 1].to(device, dtype=torch.int64)
            x, y = chunk[:-1].view(-1, seq_len), chunk[1:].view(-1, seq_len)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                nats = forward(x, y, dtype, reduction="none")
            sums[0] += nats.double().sum()
            sums[1] += y.numel()
            if self.luts is not None:
                sums[2] += target_bytes(x, y, self.luts).double().sum()
        model.train(was_training)
        distributed.all_reduce_(sums)
        loss = (sums[0] / sums[1]).item()
        bpb = bits_per_byte(sums[0].item(), sums[2].item()) if self.luts is not None else None
        return ValResult(loss, bpb)
