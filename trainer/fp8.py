"""FP8 matmul for the LM head and the linear layer that uses it.

Scale convention (DESIGN 3.6): the fp8 value is `tensor / scale`, and `_scaled_mm` multiplies the
scales back in. The scales are 0-dim float32 tensors, not Python floats: a compiled graph then takes
them as inputs, so trials that differ only in their scales reuse one compiled graph.

The forward saves only the fp8 copies of x and w. The backward quantizes the incoming gradient to
e5m2 (wider range, less precision than e4m3) and computes dX = G·W and dW = (Xᵀ·G)ᵀ from those
copies. Operand layouts follow cuBLASLt's rules for fp8 (first operand row-major, second
column-major, every dim a multiple of 16, never e5m2 x e5m2); the CPU kernel accepts them too.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2

# modded-nanogpt PR #175, tuned for the 768-wide tied head: x_s = 100/448, w_s = 1.5/448, grad_s = 0.75/448.
DEFAULT_X_S = 100 / 448
DEFAULT_W_S = 1.5 / 448
DEFAULT_GRAD_S = 0.75 / 448


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
    x_f8 = (x / x_s).to(E4M3)
    w_f8 = (w / w_s).to(E4M3)
    out = torch._scaled_mm(x_f8, w_f8.T, scale_a=x_s, scale_b=w_s, out_dtype=x.dtype)
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
    x_f8, w_f8 = x_f8.view(E4M3), w_f8.view(E4M3)
    g_f8 = (grad / grad_s).to(E5M2)
    # .T.contiguous().T makes the column-major copy that the second operand must be.
    grad_x = torch._scaled_mm(g_f8, w_f8.T.contiguous().T, scale_a=grad_s, scale_b=w_s, out_dtype=grad.dtype)
    grad_w = torch._scaled_mm(
        x_f8.T.contiguous(), g_f8.T.contiguous().T, scale_a=x_s, scale_b=grad_s, out_dtype=torch.float32
    ).T
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
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        fp8: bool = False,
        x_s: float = DEFAULT_X_S,
        w_s: float = DEFAULT_W_S,
        grad_s: float = DEFAULT_GRAD_S,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.fp8 = fp8
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        # Non-persistent: scales are run settings, not model state, and must not reach checkpoints or exports.
        for name in ("x_s", "w_s", "grad_s"):
            self.register_buffer(name, torch.empty((), dtype=torch.float32), persistent=False)
        self.set_fp8_scales(x_s, w_s, grad_s)
        nn.init.normal_(self.weight, std=in_features**-0.5)

    def set_fp8_scales(self, x_s: float | Tensor, w_s: float | Tensor, grad_s: float | Tensor) -> None:
        """Fill the scale buffers in place, so a compiled graph that reads them stays valid."""
        for name, value in (("x_s", x_s), ("w_s", w_s), ("grad_s", grad_s)):
            if not float(value) > 0:
                raise ValueError(f"fp8 scale {name} must be > 0, got {float(value)}")
            getattr(self, name).fill_(value)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.fp8 and self.training):
            return F.linear(x, self.weight.to(x.dtype))
        lead = x.shape[:-1]
        out, _, _ = fp8_mm(x.reshape(-1, self.in_features).contiguous(), self.weight, self.x_s, self.w_s, self.grad_s)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8={self.fp8}"
