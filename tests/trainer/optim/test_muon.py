"""Muon: Newton-Schulz, the update rule, and a 2-rank torchrun (gloo) run against one process."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from paths import SUPPORT

from trainer.optim.muon import Muon, newton_schulz

_spec = importlib.util.spec_from_file_location("dist_optim_worker", SUPPORT / "dist_optim_worker.py")
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


@pytest.mark.parametrize("shape", [(32, 32), (64, 16), (16, 48), (3, 24, 40)])
def test_newton_schulz_approximates_the_polar_factor(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    out = newton_schulz(g, steps=5).float()
    assert out.shape == g.shape
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    polar = u @ vh
    sv = torch.linalg.svdvals(out)
    # The quintic trades exactness for speed: singular values land near 1, not on it.
    assert sv.min() > 0.6 and sv.max() < 1.25, sv
    cos = (out * polar).sum((-2, -1)) / (out.norm(dim=(-2, -1)) * polar.norm(dim=(-2, -1)))
    assert (cos > 0.97).all(), cos


def test_update_rule_reads_momentum_each_step_and_decays_cautiously():
    gen = torch.Generator().manual_seed(1)
    p0 = torch.randn(12, 4, generator=gen)
    grads = [torch.randn(12, 4, generator=gen) for _ in range(2)]
    momenta, lr, wd = (0.85, 0.95), 0.1, 0.5
    p = torch.nn.Parameter(p0.clone())
    opt = Muon([p], lr=lr, momentum=momenta[0], weight_decay=wd)

    expected, buf = p0.clone(), torch.zeros_like(p0)
    for g, m in zip(grads, momenta):
        opt.param_groups[0]["momentum"] = m
        p.grad = g.clone()
        before = p.detach().clone()
        opt.step()

        buf = m * buf + (1 - m) * g
        update = newton_schulz((1 - m) * g + m * buf).float() * 3**0.5  # sqrt(rows / cols) = sqrt(12 / 4)
        agree = update * expected > 0
        expected = expected - lr * (update + wd * expected * agree)
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-5)
        # Where update and parameter disagree in sign, only the update moved the parameter.
        assert agree.any() and (~agree).any()
        torch.testing.assert_close((before - p.detach())[~agree], lr * update[~agree], rtol=0, atol=1e-5)


def test_rejects_parameters_that_are_not_matrices():
    with pytest.raises(ValueError, match=r"2-D.*\(3,\)"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return worker.launch("muon", tmp_path_factory.mktemp("muon"))


@pytest.fixture(scope="module")
def reference():
    """One process, no process group, fed exactly the average of both ranks' accumulated gradients."""
    params = worker.init_params(worker.MUON_SHAPES)
    opt = worker.make_muon(list(params.values()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run single-threaded: same kernels, same rounding
    try:
        for step in range(worker.STEPS):
            opt.param_groups[0]["momentum"] = worker.muon_momentum(step)
            for name, p in params.items():
                if name == "unused":
                    continue
                per_rank = [
                    sum(worker.muon_grad(step, m, r, p.shape) for m in range(worker.MICRO_BATCHES)) for r in range(2)
                ]
                p.grad = (per_rank[0] + per_rank[1]) / 2
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    return {k: p.detach() for k, p in params.items()}


@pytest.mark.slow
def test_two_ranks_equal_one_process(ranks, reference):
    init = worker.init_params(worker.MUON_SHAPES)
    for name, ref in reference.items():
        torch.testing.assert_close(ranks[0]["params"][name], ref, rtol=0, atol=1e-6, msg=lambda m: f"{name}: {m}")
        if name != "unused":
            assert not torch.allclose(ref, init[name]), f"{name} did not train"
    assert torch.equal(ranks[0]["params"]["unused"], init["unused"])


@pytest.mark.slow
def test_ranks_end_identical(ranks):
    for name, p in ranks[0]["params"].items():
        assert torch.equal(p, ranks[1]["params"][name]), name


@pytest.mark.slow
def test_work_is_dealt_round_robin(ranks):
    # Parameters with gradients, in order: tall, wide, square -> ranks 0, 1, 0. Momentum lives with the owner.
    assert ranks[0]["owned_state"] == ["square", "tall"]
    assert ranks[1]["owned_state"] == ["wide"]


@pytest.mark.slow
def test_reductions_start_in_hooks_only_for_synced_micro_batches(ranks):
    expected = [0, 0] + [0, 3] * (worker.STEPS - 1)
    assert ranks[0]["pending"] == ranks[1]["pending"] == expected
