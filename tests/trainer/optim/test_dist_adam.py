"""DistAdam: 2-rank torchrun (gloo) against torch's AdamW in one process, the untie state copy,
and the single-process behaviour of the gradient-sync hooks."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from paths import SUPPORT

from trainer.optim.dist_adam import DistAdam

_spec = importlib.util.spec_from_file_location("dist_optim_worker", SUPPORT / "dist_optim_worker.py")
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)


def make_torch_adamw(params):
    opt = torch.optim.AdamW(
        [params["head"], params["unused"]], lr=0.03, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, foreach=False
    )
    opt.add_param_group({"params": [params["vec"], params["odd"]], "lr": 0.05, "weight_decay": 0.1, "eps": 1e-3})
    return opt


def torch_untie(opt, head, embed):
    opt.add_param_group({"params": [embed], "lr": 0.02})
    opt.state[embed] = {k: v.clone() for k, v in opt.state[head].items()}
    snapshot = {k: v.clone() for k, v in opt.state[head].items()}
    return snapshot, dict(snapshot)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return worker.launch("adam", tmp_path_factory.mktemp("adam"))


@pytest.fixture(scope="module")
def reference():
    return worker.run_adam(make_torch_adamw, torch_untie)


@pytest.mark.slow
def test_two_ranks_match_adamw_on_the_whole_batch(ranks, reference):
    init = worker.init_params(worker.ADAM_SHAPES)
    for name, ref in reference["params"].items():
        got = ranks[0]["params"][name]
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
        if name != "unused":
            assert not torch.allclose(got, init.get(name, ref * 0)), f"{name} did not train"
    assert torch.equal(ranks[0]["params"]["unused"], init["unused"])


@pytest.mark.slow
def test_ranks_end_identical(ranks):
    for name, p in ranks[0]["params"].items():
        assert torch.equal(p, ranks[1]["params"][name]), name


@pytest.mark.slow
def test_reductions_start_in_hooks_only_for_synced_micro_batches(ranks):
    used_before, used_after = 3, 4  # head, vec, odd; then the untied embedding too
    per_step = [[0, 0]] + [[0, used_before]] * (worker.STEPS - 1) + [[0, used_after]] * worker.STEPS
    expected = [n for step in per_step for n in step]
    for r in ranks:
        assert r["pending"] == expected


@pytest.mark.slow
def test_untie_copies_the_gathered_adam_state(ranks, reference):
    head_state, embed_state = ranks[0]["head_state_at_untie"], ranks[0]["embed_state_at_untie"]
    assert set(head_state) == set(embed_state) == {"step", "exp_avg", "exp_avg_sq"}
    for key in head_state:
        assert torch.equal(head_state[key], embed_state[key]), key
        torch.testing.assert_close(head_state[key], reference["head_state_at_untie"][key], rtol=1e-5, atol=1e-9)
    assert head_state["exp_avg"].shape == worker.ADAM_SHAPES["head"]
    assert head_state["step"].item() == worker.STEPS
    # After the untie they train apart.
    assert not torch.allclose(ranks[0]["params"]["embed"], ranks[0]["params"]["head"])


def _toy(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.Parameter(torch.randn(5, 3, generator=gen)), torch.randn(5, 3, generator=gen)


def test_copy_state_rejects_other_shapes_and_copies_nothing_before_a_step():
    p, _ = _toy()
    opt = DistAdam([p], lr=0.1)
    other = torch.nn.Parameter(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"\(5, 3\).*\(3, 5\)"):
        opt.add_param(other, lr=0.1, copy_state_from=p)
    twin = torch.nn.Parameter(torch.zeros(5, 3))
    opt.add_param(twin, lr=0.1, copy_state_from=p)
    assert opt.full_state(twin) == {}


def test_copied_state_is_independent():
    p, target = _toy()
    opt = DistAdam([p], lr=0.1)
    ((p - target) ** 2).sum().backward()
    opt.step()
    opt.zero_grad()
    twin = torch.nn.Parameter(p.detach().clone())
    opt.add_param(twin, lr=0.1, copy_state_from=p)
    before = {k: v.clone() for k, v in opt.full_state(p).items()}
    (twin**2).sum().backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in opt.full_state(p).items())
    assert opt.full_state(twin)["step"].item() == 2


def test_reducing_twice_before_step_is_an_error():
    p, target = _toy()
    _opt = DistAdam([p], lr=0.1)
    ((p - target) ** 2).sum().backward()
    with pytest.raises(RuntimeError, match="set_grad_sync"):
        ((p - target) ** 2).sum().backward()


def test_zero_grad_discards_launched_reductions():
    p, target = _toy()
    opt = DistAdam([p], lr=0.1)
    ref = torch.optim.AdamW([torch.nn.Parameter(p.detach().clone())], lr=0.1, betas=(0.9, 0.95), weight_decay=0.0)
    ((p - target) ** 2).sum().backward()
    opt.zero_grad()
    for o, q in ((opt, p), (ref, ref.param_groups[0]["params"][0])):
        ((q - target) ** 2).sum().backward()
        o.step()
    torch.testing.assert_close(p.detach(), ref.param_groups[0]["params"][0].detach())


def test_rejected_parameter_leaves_the_optimizer_unchanged():
    p, _ = _toy()
    opt = DistAdam([p], lr=0.1)
    with pytest.raises(ValueError, match="non-contiguous"):
        opt.add_param(torch.nn.Parameter(torch.zeros(4, 3).T), lr=0.1)
    assert len(opt.param_groups) == 1
