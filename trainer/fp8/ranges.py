"""How the LM head's FP8 casts use their formats' range: the `fp8` event's figures (docs/fp8.md).

For each cast tensor, x/x_s and w/w_s against e4m3 and g/grad_s against e5m2, over every cast of one
training step (all micro-batches, all ranks):
- `saturated`: the fraction with |value| >= the format max (e4m3 clamps there, e5m2 overflows to inf);
- `flushed`: the fraction of the non-zero values whose fp8 copy is zero;
- `amax_ratio`: max |value| / format max;
- `p999_ratio`: the 99.9th percentile of |value| / format max, from a uniform sample of each cast
  (`SAMPLE` values; the mean over ranks), so its cost does not grow with the tensor.
The first three are exact counts over the whole tensors.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from trainer import distributed
from trainer.fp8.op import FORMATS

KINDS = tuple(FORMATS)
FIELDS = ("saturated", "flushed", "amax_ratio", "p999_ratio")
SAMPLE = 1 << 18
QUANTILE = 0.999


def format_max(kind: str) -> float:
    return float(torch.finfo(FORMATS[kind]).max)


def event_fields(figures: dict[str, dict[str, float]]) -> dict[str, float]:
    """{kind: {field: v}} as the event's flat names: x_saturated, g_p999_ratio, ..."""
    return {f"{kind}_{name}": figures[kind][name] for kind in KINDS for name in FIELDS}


def is_zero(cast: Tensor) -> Tensor:
    # +0 and -0 are the only fp8 codes whose low seven bits are all zero, in both formats.
    return (cast.view(torch.uint8) & 0x7F) == 0


def figures_of(magnitudes: Tensor, kind: str) -> dict[str, float]:
    """The four figures of one kind computed directly from |values| (already divided by the scale)."""
    fmax = format_max(kind)
    a = magnitudes.detach().float().flatten()
    nonzero = a != 0
    flushed = (nonzero & is_zero(a.to(FORMATS[kind]))).sum().item()
    return {"saturated": (a >= fmax).float().mean().item(),
            "flushed": flushed / max(nonzero.sum().item(), 1),
            "amax_ratio": a.max().item() / fmax,
            "p999_ratio": torch.quantile(a, QUANTILE).item() / fmax}


class RangeStats:
    """Accumulates one step's casts (fed by `trainer.fp8.observe`) and sums them up across ranks."""

    def __init__(self, device: torch.device, seed: int = 0, sample: int = SAMPLE):
        # A generator of its own, so measuring never moves the training's random stream.
        self._gen = torch.Generator(device=device).manual_seed(seed)
        self._sample = sample
        self._counts = {k: torch.zeros(4, dtype=torch.float64, device=device) for k in KINDS}  # n, sat, nonzero, flushed
        self._amax = {k: torch.zeros((), dtype=torch.float32, device=device) for k in KINDS}
        self.samples: dict[str, list[Tensor]] = {k: [] for k in KINDS}

    def __call__(self, kind: str, scaled: Tensor, cast: Tensor) -> None:
        a = scaled.detach().abs().flatten()
        nonzero = a != 0
        counts = torch.stack([torch.tensor(a.numel(), device=a.device), (a >= format_max(kind)).sum(),
                              nonzero.sum(), (nonzero & is_zero(cast.flatten())).sum()])
        self._counts[kind] += counts
        self._amax[kind] = torch.maximum(self._amax[kind], a.max().float())
        if a.numel() > self._sample:
            a = a[torch.randint(a.numel(), (self._sample,), generator=self._gen, device=a.device)]
        self.samples[kind].append(a.float())

    def sample(self, kind: str) -> Tensor:
        return torch.cat(self.samples[kind])

    def figures(self) -> dict[str, dict[str, float]]:
        """The step's figures per kind; a collective: every rank must call it."""
        missing = [k for k in KINDS if not self.samples[k]]
        if missing:
            raise RuntimeError(f"no fp8 cast of {', '.join(missing)} was observed in this step")
        counts = distributed.all_reduce_(torch.stack([self._counts[k] for k in KINDS]))
        amax = distributed.all_reduce_(torch.stack([self._amax[k] for k in KINDS]), dist.ReduceOp.MAX)
        p999 = torch.stack([torch.quantile(self.sample(k), QUANTILE) for k in KINDS]).double()
        p999 = distributed.all_reduce_(p999) / (dist.get_world_size() if dist.is_initialized() else 1)
        out = {}
        for i, kind in enumerate(KINDS):
            n, sat, nonzero, flushed = counts[i].tolist()
            fmax = format_max(kind)
            out[kind] = {"saturated": sat / n, "flushed": flushed / max(nonzero, 1.0),
                         "amax_ratio": amax[i].item() / fmax, "p999_ratio": p999[i].item() / fmax}
        return out
