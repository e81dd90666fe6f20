"""Per-tensor storage decisions and the per-row quantizers behind them.

Every tensor of a state dict is stored under one of four tensor schemes:

- `raw`: the original bytes (non-float tensors and control tensors; bit-exact).
- `fp16`: cast to float16, cast back to the original dtype on load (small float tensors, and the
  embedding with `export.embed=fp16`).
- `int6_row` / `int8_row`: a 2-D view `(shape[0], -1)` quantized per row, q held in int8, one fp16
  scale per row, value = q * scale (weight matrices, and the embedding with `export.embed=int6|int8`).

The decision, in order (first match wins):
1. a non-float tensor is `raw`;
2. a tensor named in `embed_names` is stored as `export.embed` says (even when small);
3. a control tensor (its name contains one of `control_patterns`, by default the model's own
   `CONTROL_NAMES`: per-channel gains, mixes, skip weights) is `raw`, whatever its size, so these stay
   fp32-exact;
4. a tensor of at most `passthrough_max_numel` elements is `fp16`;
5. anything else gets the scheme's matrix format.
An `fp16` decision falls back to `raw` when the tensor already is fp16 or does not fit fp16's range.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor

from trainer.export.schemes import EMBED_FORMATS, ROW_FORMATS, RowFormat, check_embed, get_scheme
from trainer.model import CONTROL_NAMES, EMBED_WEIGHT, HEAD_WEIGHT

# The tied LM head weight, and the input embedding once untied: the most quantization-sensitive tensors.
EMBED_NAMES = (HEAD_WEIGHT, EMBED_WEIGHT)
CONTROL_PATTERNS = CONTROL_NAMES
PASSTHROUGH_MAX_NUMEL = 65_536
# Row clip candidates as fractions of the row's max |w|; 1.0 keeps the search never worse than no clip.
CLIP_FRACTIONS = (1.0, 0.96, 0.92, 0.88, 0.84, 0.8, 0.75, 0.7)
BASELINE_CLIP_PERCENTILE = 99.99984
# fp16 scales below the smallest normal lose relative precision (and 0 would divide by zero); rows that
# small are zero for every practical purpose, so they are quantized on this floor instead.
MIN_SCALE = torch.finfo(torch.float16).tiny
FP16_MAX = torch.finfo(torch.float16).max
CHUNK_ELEMENTS = 1 << 22    # rows are processed in slices of about this many elements to bound memory
TENSOR_SCHEMES = ("raw", "fp16", *ROW_FORMATS)


@dataclass(frozen=True)
class ExportRules:
    """Everything that decides how each tensor of a state dict is stored."""

    scheme: str = "int6_zstd"
    embed: str = "fp16"
    embed_names: tuple[str, ...] = EMBED_NAMES
    control_patterns: tuple[str, ...] = CONTROL_PATTERNS
    passthrough_max_numel: int = PASSTHROUGH_MAX_NUMEL
    clip_fractions: tuple[float, ...] = CLIP_FRACTIONS

    def __post_init__(self) -> None:
        get_scheme(self.scheme)
        check_embed(self.embed)
        if not self.clip_fractions or not all(0.0 < f <= 1.0 for f in self.clip_fractions):
            raise ValueError(f"clip_fractions must be fractions in (0, 1], got {self.clip_fractions!r}")
        if self.passthrough_max_numel < 0:
            raise ValueError(f"passthrough_max_numel must not be negative, got {self.passthrough_max_numel}")

    def is_control(self, name: str) -> bool:
        return any(p in name for p in self.control_patterns)

    def tensor_scheme(self, name: str, tensor: Tensor) -> str:
        if not tensor.is_floating_point():
            return "raw"
        if name in self.embed_names:
            fmt = EMBED_FORMATS[self.embed]
            return fmt.name if fmt is not None else _fp16_or_raw(tensor)
        if self.is_control(name):
            return "raw"
        if tensor.numel() <= self.passthrough_max_numel:
            return _fp16_or_raw(tensor)
        return get_scheme(self.scheme).matrix_format.name


def _fp16_or_raw(tensor: Tensor) -> str:
    if tensor.dtype == torch.float16 or tensor.numel() == 0:
        return "raw"
    return "fp16" if float(tensor.abs().max()) <= FP16_MAX else "raw"


@dataclass
class EncodedTensor:
    """A tensor as stored: `data` (raw values, fp16 values or int8 levels) and, when quantized, `scale`."""

    scheme: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    data: Tensor
    scale: Tensor | None = None


def _rows(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1) if t.ndim >= 2 else t.reshape(1, -1)


def _row_slices(rows: Tensor) -> Iterable[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, rows.shape[1]))
    for start in range(0, rows.shape[0], step):
        yield slice(start, start + step)


def _scale_for(clip: Tensor, fmt: RowFormat, name: str) -> Tensor:
    scale = clip / fmt.qmax
    if bool((scale > FP16_MAX).any()):
        raise ValueError(f"tensor {name!r}: values too large for an fp16 row scale (max |w| {float(clip.max()):.4g})")
    return scale.clamp_min(MIN_SCALE).to(torch.float16)


def _levels(x: Tensor, scale16: Tensor, fmt: RowFormat) -> Tensor:
    return torch.clamp(torch.round(x / scale16.float()[:, None]), fmt.qmin, fmt.qmax)


def quantize_rows_search(rows: Tensor, fmt: RowFormat, fractions: tuple[float, ...] = CLIP_FRACTIONS,
                         name: str = "tensor") -> tuple[Tensor, Tensor]:
    """Quantize each row with the clip (a fraction of the row's max |w|) whose reconstruction has the
    smallest squared error. Returns (q int8 [rows, cols], scale fp16 [rows])."""
    q_out = torch.empty(rows.shape, dtype=torch.int8, device=rows.device)
    s_out = torch.empty(rows.shape[0], dtype=torch.float16, device=rows.device)
    for sl in _row_slices(rows):
        x = rows[sl].float()
        amax = x.abs().amax(dim=1)
        best_err = best_q = best_s = None
        for frac in fractions:
            s = _scale_for(amax * frac, fmt, name)
            q = _levels(x, s, fmt)
            err = (q * s.float()[:, None] - x).square().sum(dim=1)
            if best_err is None:
                best_err, best_q, best_s = err, q, s
                continue
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_q = torch.where(better[:, None], q, best_q)
            best_s = torch.where(better, s, best_s)
        q_out[sl] = best_q.to(torch.int8)
        s_out[sl] = best_s
    return q_out, s_out


def quantize_rows_percentile(rows: Tensor, fmt: RowFormat, percentile: float = BASELINE_CLIP_PERCENTILE,
                             name: str = "tensor") -> tuple[Tensor, Tensor]:
    """Quantize each row with its clip at `percentile` of |w| (the baseline rule)."""
    q_out = torch.empty(rows.shape, dtype=torch.int8, device=rows.device)
    s_out = torch.empty(rows.shape[0], dtype=torch.float16, device=rows.device)
    for sl in _row_slices(rows):
        x = rows[sl].float()
        clip = torch.quantile(x.abs(), percentile / 100.0, dim=1)
        s = _scale_for(clip, fmt, name)
        q_out[sl] = _levels(x, s, fmt).to(torch.int8)
        s_out[sl] = s
    return q_out, s_out


def dequantize_rows(q: Tensor, scale: Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    return (q.float() * scale.float()[:, None]).to(dtype).reshape(shape)


def encode(name: str, tensor: Tensor, rules: ExportRules) -> EncodedTensor:
    """The stored form of `tensor`, on the CPU. Quantization runs where the tensor lives (a GPU at the end
    of a run), so only the int8 levels and scales cross to the host."""
    t = tensor.detach().contiguous()
    scheme = rules.tensor_scheme(name, t)
    shape = tuple(t.shape)
    if scheme == "raw":
        return EncodedTensor(scheme, t.dtype, shape, t.cpu())
    if scheme == "fp16":
        return EncodedTensor(scheme, t.dtype, shape, t.to(torch.float16).cpu())
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"tensor {name!r} has non-finite values and cannot be quantized")
    fmt = ROW_FORMATS[scheme]
    if get_scheme(rules.scheme).clip == "search":
        q, s = quantize_rows_search(_rows(t), fmt, rules.clip_fractions, name)
    else:
        q, s = quantize_rows_percentile(_rows(t), fmt, name=name)
    return EncodedTensor(scheme, t.dtype, shape, q.cpu(), s.cpu())


def decode(enc: EncodedTensor) -> Tensor:
    if enc.scheme == "raw":
        return enc.data.reshape(enc.shape)
    if enc.scheme == "fp16":
        return enc.data.to(enc.dtype).reshape(enc.shape)
    return dequantize_rows(enc.data, enc.scale, enc.shape, enc.dtype)


def quantization_step(enc: EncodedTensor) -> Tensor:
    """Per-element quantization step (the row scale), shaped like the tensor; for quantized schemes only."""
    rows = enc.data.shape[0]
    return enc.scale.float()[:, None].expand(rows, enc.data.shape[1]).reshape(enc.shape)

