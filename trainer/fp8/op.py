"""FP8 matmul for the LM head and the linear layer that uses it.

Scale convention (docs/fp8.md): the fp8 value is `tensor / scale`, and the matmul multiplies the
scales back in. The scales are 0-dim float32 tensors, not Python floats: a compiled graph then takes
them as inputs, so trials that differ only in their scales reuse one compiled graph.

The forward saves only the fp8 copies of x and w. The backward quantizes the incoming gradient to
e5m2 (wider range, less precision than e4m3) and computes dX = G·W and dW = (Xᵀ·G)ᵀ from those
copies. Operand layouts follow cuBLASLt's rules for fp8 (first operand row-major, second
column-major, every dim a multiple of 16, never e5m2 x e5m2).

On CUDA the products run in `torch._scaled_mm`. On CPU they run as float32 matmuls of the upcast fp8
copies: every e4m3 and e5m2 value is exactly a float32, and so is the product of two of them (at most
4 x 4 significant bits), so only the float32 accumulation order differs from `_scaled_mm`. That path is
taken on every CPU because `_scaled_mm`'s CPU kernel for e4m3 x e4m3 is 1000x slower than float32 on
some x86 models and fast on others (docs/fp8.md has the figures).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2

# modded-nanogpt PR #175, tuned for the 768-wide tied head: x_s = 100/448, w_s = 1.5/448, grad_s = 0.75/448.
DEFAULT_X_S = 100 / 448
DEFAULT_W_S = 1.5 / 448
DEFAULT_GRAD_S = 0.75 / 448

# Which tensor is cast to which format: the op's three casts, named as the range diagnostics name them.
FORMATS = {"x": E4M3, "w": E4M3, "g": E5M2}

Observer = Callable[[str, Tensor, Tensor], None]
_observer: Observer | None = None


@contextmanager
def observe(fn: Observer) -> Iterator[None]:
    """Call `fn(kind, scaled, cast)` for every cast the op makes inside the block: kind is "x", "w" or "g",
    `scaled` the tensor divided by its scale, `cast` its fp8 copy.

    The op's body runs eagerly even inside a compiled graph (a custom op is opaque to the compiler), so
    the observer sees the tensors that are really cast, and switching it on or off never recompiles.
    """
    global _observer
    previous, _observer = _observer, fn
    try:
        yield
    finally:
        _observer = previous


def _cast(kind: str, t: Tensor, scale: Tensor) -> Tensor:
    scaled = t / scale
    cast = scaled.to(FORMATS[kind])
    if _observer is not None:
        _observer(kind, scaled, cast)
    return cast


def scaled_mm(a: Tensor, b: Tensor, scale_a: Tensor, scale_b: Tensor, out_dtype: torch.dtype) -> Tensor:
    """(a · scale_a) @ (b · scale_b) for fp8 a and b, in torch's fp8 kernel."""
    return torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype)


def upcast_mm(a: Tensor, b: Tensor, scale_a: Tensor, scale_b: Tensor, out_dtype: torch.dtype) -> Tensor:
    """The same product from float32 copies of a and b: exact products, float32 accumulation."""
    return ((a.float() @ b.float()) * (scale_a * scale_b)).to(out_dtype)


def fp8_matmul(a: Tensor) -> Callable[..., Tensor]:
    return scaled_mm if a.is_cuda else upcast_mm


def _check_cuda_dims(*dims: int) -> None:
    if any(d % 16 for d in dims):
        raise ValueError(f"fp8 matmul on CUDA needs every dim to be a multiple of 16, got {dims}")


@torch.library.custom_op("gptsweep::fp8_mm", mutates_args=())
def fp8_mm(x: Tensor, w: Tensor, x_s: Tensor, w_s: Tensor, grad_s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """out = x @ w.T through e4m3 copies of x (N, K) and w (M, K); returns (out, x_f8, w_f8).

    The fp8 copies come back as uint8 views of their bytes: integer outputs are plainly
    non-differentiable, and generic tooling (reductions in torch's op checks) works on them, which
    float8 tensors do not support on CPU. grad_s is unused here but is an input so that the backward
    can read it from the saved context.
    """
    if x.is_cuda:
        _check_cuda_dims(*x.shape, w.shape[0])
    x_f8 = _cast("x", x, x_s)
    w_f8 = _cast("w", w, w_s)
    out = fp8_matmul(x)(x_f8, w_f8.T, x_s, w_s, x.dtype)
    return out, x_f8.view(torch.uint8), w_f8.view(torch.uint8)


@fp8_mm.register_fake
def _(x, w, x_s, w_s, grad_s):
    out = x.new_empty(x.shape[0], w.shape[0])
    return out, x.new_empty(x.shape, dtype=torch.uint8), w.new_empty(w.shape, dtype=torch.uint8)


@torch.library.custom_op("gptsweep::fp8_mm_backward", mutates_args=())
def fp8_mm_backward(
    grad: Tensor, x_f8: Tensor, w_f8: Tensor, x_s: Tensor, w_s: Tensor, grad_s: Tensor
) -> tuple[Tensor, Tensor]:
    """(dX, dW) for out = x @ w.T from the saved fp8 copies (uint8 bytes of e4m3), with the
    gradient in e5m2. dX comes back in the gradient's dtype (the activations' dtype), dW in float32.
    """
    return backward_products(grad, x_f8, w_f8, x_s, w_s, grad_s, fp8_matmul(grad))


def backward_products(grad: Tensor, x_f8: Tensor, w_f8: Tensor, x_s: Tensor, w_s: Tensor, grad_s: Tensor,
                      mm: Callable[..., Tensor]) -> tuple[Tensor, Tensor]:
    """fp8_mm_backward's body with the matmul kernel named, so both kernels can be compared."""
    x_f8, w_f8 = x_f8.view(E4M3), w_f8.view(E4M3)
    g_f8 = _cast("g", grad, grad_s)
    # .T.contiguous().T makes the column-major copy that the second operand must be.
    grad_x = mm(g_f8, w_f8.T.contiguous().T, grad_s, w_s, grad.dtype)
    grad_w = mm(x_f8.T.contiguous(), g_f8.T.contiguous().T, x_s, grad_s, torch.float32).T
    return grad_x, grad_w


@fp8_mm_backward.register_fake
def _(grad, x_f8, w_f8, x_s, w_s, grad_s):
    return grad.new_empty(grad.shape[0], w_f8.shape[1]), grad.new_empty(w_f8.shape[::-1], dtype=torch.float32).T


def _setup_context(ctx, inputs, output):
    _, w, x_s, w_s, grad_s = inputs
    _, x_f8, w_f8 = output
    ctx.save_for_backward(x_f8, w_f8, x_s, w_s, grad_s)
    ctx.w_dtype = w.dtype


def _backward(ctx, grad_out, _grad_x_f8, _grad_w_f8):
    x_f8, w_f8, x_s, w_s, grad_s = ctx.saved_tensors
    grad_x, grad_w = fp8_mm_backward(grad_out.contiguous(), x_f8, w_f8, x_s, w_s, grad_s)
    return grad_x, grad_w.to(ctx.w_dtype), None, None, None


fp8_mm.register_autograd(_backward, setup_context=_setup_context)


class CastedLinear(nn.Module):
    """Bias-free linear layer whose matmuls run in FP8 while training when `fp8` is on.

    The weight is kept in its own dtype (float32 master weights) and cast to the input's dtype for
    the plain path; evaluation always takes the plain path so validation losses do not depend on the
    scales.

    `grad_s` is in upstream's units: the scale of the gradient of the training loss summed over tokens
    (modded-nanogpt's `reduction="sum"`). A training loss that is a mean over `loss_tokens` tokens sends
    the head a gradient `loss_tokens` times smaller, so the op divides it by `grad_s / loss_tokens`: the
    e5m2 copy then holds the same values as upstream's, whatever the batch size, micro-batching and
    world size.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        fp8: bool = False,
        x_s: float = DEFAULT_X_S,
        w_s: float = DEFAULT_W_S,
        grad_s: float = DEFAULT_GRAD_S,
        loss_tokens: float = 1.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.fp8 = fp8
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        # Non-persistent: scales are run settings, not model state, and must not reach checkpoints or exports.
        for name in ("x_s", "w_s", "grad_s", "loss_tokens"):
            self.register_buffer(name, torch.empty((), dtype=torch.float32), persistent=False)
        self.set_fp8_scales(x_s, w_s, grad_s)
        self.set_loss_tokens(loss_tokens)
        nn.init.normal_(self.weight, std=in_features**-0.5)

    def set_fp8_scales(self, x_s: float | Tensor, w_s: float | Tensor, grad_s: float | Tensor) -> None:
        """Fill the scale buffers in place, so a compiled graph that reads them stays valid."""
        for name, value in (("x_s", x_s), ("w_s", w_s), ("grad_s", grad_s)):
            if not float(value) > 0:
                raise ValueError(f"fp8 scale {name} must be > 0, got {float(value)}")
            getattr(self, name).fill_(value)

    def set_loss_tokens(self, n: float) -> None:
        """The number of tokens the training loss is a mean over (1 for a summed loss)."""
        if not n >= 1:
            raise ValueError(f"loss_tokens must be >= 1, got {n}")
        self.loss_tokens.fill_(n)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.fp8 and self.training):
            return F.linear(x, self.weight.to(x.dtype))
        lead = x.shape[:-1]
        out, _, _ = fp8_mm(x.reshape(-1, self.in_features).contiguous(), self.weight, self.x_s, self.w_s,
                           self.grad_s / self.loss_tokens)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8={self.fp8}"
