"""FP8 LM-head op: accuracy against float32, scale wiring, op registration, compile behaviour."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend

from trainer.fp8.op import CastedLinear, fp8_mm, fp8_mm_backward

# modded-nanogpt PR #175
PR175_SCALES = {"x_s": 100 / 448, "w_s": 1.5 / 448, "grad_s": 0.75 / 448}
# Relative error of one fp8 rounding is about 2^-4 (e4m3) / 2^-3 (e5m2); sums average it down.
FWD_TOL, BWD_TOL = 0.08, 0.12


def _data(seed: int = 0):
    """Activations after a norm (unit scale), a head weight at the tied init std 0.005, and a
    gradient of the size a mean cross-entropy gives."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 128, generator=gen)
    w = torch.randn(192, 128, generator=gen) * 0.005
    g = torch.randn(256, 192, generator=gen) * 1e-3
    return x, w, g


def _rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a - ref).norm() / ref.norm()).item()


def _run(scales: dict[str, float]) -> dict[str, float]:
    x, w, g = _data()
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    out, _, _ = fp8_mm(xr, wr, *(torch.tensor(scales[k]) for k in ("x_s", "w_s", "grad_s")))
    out.backward(g)
    return {
        "out": _rel_err(out.detach(), x @ w.T),
        "dx": _rel_err(xr.grad, g @ w),
        "dw": _rel_err(wr.grad, g.T @ x),
    }


# modded-nanogpt PR #172
PR172_SCALES = {"x_s": 768**0.5 / 448, "w_s": 2.0**-9, "grad_s": 1 / 448}


@pytest.mark.parametrize("scales", [PR175_SCALES, PR172_SCALES], ids=["pr175", "pr172"])
def test_matches_float32_with_sensible_scales(scales):
    errors = _run(scales)
    assert errors["out"] < FWD_TOL, errors
    assert errors["dx"] < BWD_TOL and errors["dw"] < BWD_TOL, errors


# Which results each scale feeds: x_s quantizes x (out, dW); w_s quantizes w (out, dX);
# grad_s quantizes the gradient (dX, dW).
AFFECTS = {"x_s": {"out", "dw"}, "w_s": {"out", "dx"}, "grad_s": {"dx", "dw"}}


@pytest.mark.parametrize("factor", [1e-6, 1e5], ids=["overflow", "underflow"])
@pytest.mark.parametrize("name", sorted(AFFECTS))
def test_bad_scale_changes_exactly_what_it_feeds(name, factor):
    """Too small a scale saturates (e4m3) or overflows to inf (e5m2); too large flushes to zero."""
    errors = _run({**PR175_SCALES, name: PR175_SCALES[name] * factor})
    for result, err in errors.items():
        if result in AFFECTS[name]:
            assert not err < 0.5, f"{name} x{factor} left {result} accurate: {errors}"
        else:
            assert err < BWD_TOL, f"{name} x{factor} disturbed {result}: {errors}"


def test_saved_copies_are_fp8_bytes():
    x, w, _ = _data()
    _, x_f8, w_f8 = fp8_mm(x, w, *(torch.tensor(v) for v in PR175_SCALES.values()))
    assert x_f8.dtype == w_f8.dtype == torch.uint8
    expected = (x / PR175_SCALES["x_s"]).to(torch.float8_e4m3fn)
    assert torch.equal(x_f8.view(torch.float8_e4m3fn).float(), expected.float())


def test_opcheck():
    x, w, g = _data()
    scales = [torch.tensor(v) for v in PR175_SCALES.values()]
    torch.library.opcheck(fp8_mm, (x.requires_grad_(), w.requires_grad_(), *scales))
    _, x_f8, w_f8 = fp8_mm(x.detach(), w.detach(), *scales)
    torch.library.opcheck(fp8_mm_backward, (g, x_f8, w_f8, *scales))


def _head(fp8: bool) -> CastedLinear:
    torch.manual_seed(0)
    head = CastedLinear(128, 192, fp8=fp8, **PR175_SCALES)
    torch.nn.init.normal_(head.weight, std=0.005)
    return head


def _fwd_bwd(module, x: torch.Tensor):
    x = x.clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    out = module(x)
    out.square().sum().backward()
    return out.detach(), x.grad, module.weight.grad.clone()


def test_compiled_graph_is_reused_across_scales_and_matches_eager():
    head = _head(fp8=True)
    x = torch.randn(4, 16, 128)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(head, backend=counter)
    for scales in (PR175_SCALES, {"x_s": 0.05, "w_s": 0.01, "grad_s": 0.004}):
        head.set_fp8_scales(**scales)
        eager = _fwd_bwd(head, x)
        comp = _fwd_bwd(compiled, x)
        for e, c in zip(eager, comp):
            assert torch.equal(e, c)
    assert counter.frame_count == 1
    torch._dynamo.reset()


def test_casted_linear_paths():
    head = _head(fp8=True)
    x = torch.randn(2, 8, 128)
    ref = F.linear(x, head.weight)
    fp8_out = head(x)
    assert fp8_out.shape == (2, 8, 192)
    assert not torch.equal(fp8_out, ref) and _rel_err(fp8_out.detach(), ref.detach()) < FWD_TOL
    head.eval()
    assert torch.equal(head(x), ref)
    plain = _head(fp8=False)
    assert torch.equal(plain(x), ref)


def test_casted_linear_gradients_follow_the_weight():
    head = _head(fp8=True)
    _, dx, dw = _fwd_bwd(head, torch.randn(2, 8, 128))
    assert dx.shape == (2, 8, 128)
    assert dw.shape == head.weight.shape and dw.dtype == head.weight.dtype


def test_scales_are_in_place_runtime_buffers():
    head = _head(fp8=True)
    ptr = head.x_s.data_ptr()
    head.set_fp8_scales(0.5, 0.25, torch.tensor(0.125))
    assert head.x_s.data_ptr() == ptr
    assert (head.x_s.item(), head.w_s.item(), head.grad_s.item()) == (0.5, 0.25, 0.125)
    assert set(head.state_dict()) == {"weight"}
    with pytest.raises(ValueError, match="w_s"):
        head.set_fp8_scales(0.5, 0.0, 0.1)


def test_cpu_products_equal_scaled_mm_within_float32_accumulation():
    """The CPU path (float32 matmuls of the upcast fp8 copies) against torch._scaled_mm on the same
    copies: forward, dX and dW agree to float32 rounding of the sums."""
    from trainer.fp8.op import backward_products, scaled_mm, upcast_mm

    x, w, g = _data()
    scales = [torch.tensor(v) for v in PR175_SCALES.values()]
    out, x_f8, w_f8 = fp8_mm(x, w, *scales)
    x8, w8 = x_f8.view(torch.float8_e4m3fn), w_f8.view(torch.float8_e4m3fn)
    reference = scaled_mm(x8, w8.T, scales[0], scales[1], torch.float32)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    assert torch.equal(upcast_mm(x8, w8.T, scales[0], scales[1], torch.float32), out)
    fast = backward_products(g, x_f8, w_f8, *scales, mm=upcast_mm)
    slow = backward_products(g, x_f8, w_f8, *scales, mm=scaled_mm)
    for a, b in zip(fast, slow):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * b.abs().max().item())
    # ...and autograd takes the same path: the op's gradients are the CPU products.
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    fp8_mm(xr, wr, *scales)[0].backward(g)
    assert torch.equal(xr.grad, fast[0]) and torch.equal(wr.grad, fast[1])
