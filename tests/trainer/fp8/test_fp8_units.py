"""The head's e5m2 gradient is in upstream's units (the summed loss), whatever the batch; scale schedules."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.testing import CompileCounterWithBackend

from trainer import distributed, events, protocol
from trainer.config import load_config
from trainer.fp8.op import E5M2, observe
from trainer.train import Trainer

PR175 = ["fp8.enabled=true", f"fp8.x_s={100 / 448!r}", f"fp8.w_s={1.5 / 448!r}", f"fp8.grad_s={0.75 / 448!r}"]
SMALL = ["train.iterations=4", "train.val_tokens=4096", "train.val_batch_tokens=4096", "train.val_every=0"]


def _trainer(*overrides: str, run_dir=None) -> Trainer:
    cfg = load_config("tiny", overrides=[*PR175, *SMALL, *overrides])
    return Trainer(cfg, distributed.setup("cpu"), events.RunLog(run_dir, active=run_dir is not None, echo=False))


def _capture_g(trainer: Trainer) -> list[torch.Tensor]:
    casts: list[torch.Tensor] = []
    with observe(lambda kind, scaled, cast: casts.append(cast.clone()) if kind == "g" else None):
        trainer.train_step(1.0, 0.9)
    return casts


@pytest.mark.parametrize("batch", [("train.batch_tokens=4096", "train.micro_batches=4"),
                                   ("train.batch_tokens=2048", "train.micro_batches=1")], ids=["4x1024", "1x2048"])
def test_e5m2_gradient_equals_a_summed_loss_reference(batch):
    """The copy the trainer casts equals (d sum-CE / d logits) / grad_s cast to e5m2, as modded-nanogpt
    computes it, on the same logits and targets: the units carry over."""
    trainer = _trainer(*batch)
    model, head = trainer.model, trainer.model.lm_head
    x, y = trainer.loader.next_batch()[0]
    trainer.loader.step = 0  # the training step below reads the same batch
    logits = head(model.hidden(x, torch.float32)).detach().requires_grad_()
    capped = model.logit_softcap * torch.tanh(logits / model.logit_softcap)
    loss = F.cross_entropy(capped.view(-1, capped.size(-1)), y.reshape(-1), reduction="sum")
    (grad,) = torch.autograd.grad(loss, logits)
    reference = (grad.reshape(-1, grad.size(-1)) / head.grad_s).to(E5M2)

    first_micro_batch = _capture_g(trainer)[0]
    assert first_micro_batch.shape == reference.shape
    assert torch.equal(first_micro_batch.view(torch.uint8), reference.view(torch.uint8))
    # The reference is far from trivial: most entries are neither flushed nor saturated.
    assert (reference.float() != 0).float().mean() > 0.5


def _first_fp8_event(tmp_path, *overrides: str) -> dict:
    run_dir = tmp_path / "run"
    trainer = _trainer("fp8.stats_every=1", "train.iterations=1", *overrides, run_dir=run_dir)
    trainer.run()
    trainer.log.close()
    evs = [json.loads(line) for line in (run_dir / protocol.EVENTS_FILE).read_text().splitlines()]
    return next(e for e in evs if e["event"] == "fp8")


def test_gradient_range_does_not_depend_on_batch_tokens(tmp_path):
    small = _first_fp8_event(tmp_path / "a", "train.batch_tokens=2048", "train.micro_batches=2")
    large = _first_fp8_event(tmp_path / "b", "train.batch_tokens=8192", "train.micro_batches=2")
    assert large["g_p999_ratio"] == pytest.approx(small["g_p999_ratio"], rel=0.05)
    assert large["g_amax_ratio"] == pytest.approx(small["g_amax_ratio"], rel=0.05)
    assert large["g_flushed"] == pytest.approx(small["g_flushed"], abs=0.01)


def _linear(start: float, end: float, frac: float) -> float:
    return start + (end - start) * frac


def test_schedule_moves_the_scales_and_never_recompiles():
    ends = {"x_s": 0.05, "w_s": 0.01, "grad_s": 0.0001}
    trainer = _trainer("train.iterations=6", "fp8.stats_every=1", *(f"fp8.{k}_end={v}" for k, v in ends.items()))
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    trainer.forward = torch.compile(trainer.model, backend=counter, dynamic=False)
    seen = []

    def record(step, scales, stats, figures):
        seen.append((step, scales, figures["g"]["amax_ratio"], counter.frame_count,
                     dict(torch._dynamo.utils.counters["recompiles"])))

    trainer.run(on_fp8_range=record)
    torch._dynamo.reset()
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5, 6]
    start = trainer.cfg.fp8
    for step, scales, _, _, _ in seen:
        frac = (step - 1) / 6
        expected = tuple(_linear(start[k], ends[k], frac) for k in ("x_s", "w_s", "grad_s"))
        assert scales == pytest.approx(expected, rel=1e-12)
    # The op really reads the scales in effect: the gradient's amax in e5m2 units grows as grad_s shrinks.
    assert seen[-1][2] > 3 * seen[0][2]
    assert {s[3] for s in seen} == {1} and not seen[-1][4]
