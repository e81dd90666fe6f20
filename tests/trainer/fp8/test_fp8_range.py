"""The `fp8` event's figures against a direct computation on hand-built tensors."""
from __future__ import annotations

import pytest
import torch

from trainer.fp8.op import E4M3, E5M2, fp8_mm, observe
from trainer.fp8.ranges import SAMPLE, RangeStats, event_fields

E4M3_MAX, E5M2_MAX = 448.0, 57344.0
# Below half the smallest subnormal a value rounds to zero: e4m3 2^-9, e5m2 2^-16.
E4M3_FLUSH, E5M2_FLUSH = 2.0**-11, 2.0**-18


def _hand_built(n: int, saturated: int, flushed: int, zeros: int, fmax: float, tiny: float, scale: float,
                gen: torch.Generator) -> torch.Tensor:
    """`n` values of `tensor / scale` in (tiny*4, fmax/4) but for the given counts at 2*fmax, at
    `tiny` (which flushes) and at 0, in a shuffled order; returned multiplied back by `scale`."""
    mid = torch.exp(torch.empty(n - saturated - flushed - zeros).uniform_(
        torch.log(torch.tensor(tiny * 64)).item(), torch.log(torch.tensor(fmax / 4)).item(), generator=gen))
    values = torch.cat([torch.full((saturated,), 2 * fmax), torch.full((flushed,), tiny), torch.zeros(zeros), mid])
    signs = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    return (values * signs)[torch.randperm(n, generator=gen)] * scale


def test_figures_equal_a_direct_computation():
    gen = torch.Generator().manual_seed(0)
    x_s, w_s, grad_s = 0.5, 0.01, 0.001
    x = _hand_built(64 * 32, saturated=41, flushed=97, zeros=8, fmax=E4M3_MAX, tiny=E4M3_FLUSH, scale=x_s, gen=gen)
    w = _hand_built(48 * 32, saturated=0, flushed=15, zeros=0, fmax=E4M3_MAX, tiny=E4M3_FLUSH, scale=w_s, gen=gen)
    g = _hand_built(64 * 48, saturated=30, flushed=300, zeros=3, fmax=E5M2_MAX, tiny=E5M2_FLUSH, scale=grad_s, gen=gen)
    x, w, g = x.view(64, 32).requires_grad_(), w.view(48, 32).requires_grad_(), g.view(64, 48)
    stats = RangeStats(torch.device("cpu"))
    with observe(stats):
        out, _, _ = fp8_mm(x, w, torch.tensor(x_s), torch.tensor(w_s), torch.tensor(grad_s))
        out.backward(g)
    figures = stats.figures()

    for kind, tensor, scale, fmax, n_sat, n_flush, n_zero in (
            ("x", x, x_s, E4M3_MAX, 41, 97, 8), ("w", w, w_s, E4M3_MAX, 0, 15, 0),
            ("g", g, grad_s, E5M2_MAX, 30, 300, 3)):
        a = (tensor.detach() / scale).abs().flatten()
        assert figures[kind]["saturated"] == pytest.approx(n_sat / a.numel()), kind
        assert figures[kind]["flushed"] == pytest.approx(n_flush / (a.numel() - n_zero)), kind
        assert figures[kind]["amax_ratio"] == pytest.approx(a.max().item() / fmax), kind
        assert figures[kind]["p999_ratio"] == pytest.approx(torch.quantile(a, 0.999).item() / fmax), kind
    fields = event_fields(figures)
    assert set(fields) == {f"{k}_{f}" for k in "xwg" for f in ("saturated", "flushed", "amax_ratio", "p999_ratio")}
    assert fields["g_saturated"] == figures["g"]["saturated"] > 0


def test_large_tensors_count_exactly_and_sample_the_percentile():
    gen = torch.Generator().manual_seed(1)
    n = 4 * SAMPLE
    scaled = torch.randn(n, generator=gen) * 10
    scaled[:500] = 1000.0  # saturated in e4m3, and few enough that the 99.9th percentile is in the bulk
    stats = RangeStats(torch.device("cpu"))
    stats("x", scaled, scaled.to(E4M3))
    stats("w", scaled[:100], scaled[:100].to(E4M3))
    stats("g", scaled[:100], scaled[:100].to(E5M2))
    figures = stats.figures()["x"]
    assert stats.sample("x").numel() == SAMPLE
    assert figures["saturated"] == 500 / n
    exact = torch.quantile(scaled.abs(), 0.999).item() / E4M3_MAX
    assert figures["p999_ratio"] == pytest.approx(exact, rel=0.03)


def test_a_step_without_casts_is_an_error():
    with pytest.raises(RuntimeError, match="no fp8 cast of x, w, g"):
        RangeStats(torch.device("cpu")).figures()
