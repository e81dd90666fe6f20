"""torch.compile of the model: same numbers as eager, and the FP8 scales do not specialise the graph."""
import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from trainer.config import load_config
from trainer.model import GPT

pytestmark = pytest.mark.slow  # starts Ray or torchrun processes


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    cfg = load_config("tiny", overrides=["fp8.enabled=true"])
    eager = GPT.from_config(cfg)
    eager.set_fp8(True, cfg.fp8.x_s, cfg.fp8.w_s, cfg.fp8.grad_s)
    counter = CompileCounterWithBackend("inductor")
    torch._dynamo.reset()
    compiled = torch.compile(eager, backend=counter, dynamic=False)
    x = torch.randint(0, cfg.model.vocab_size, (4, cfg.train.seq_len))
    y = torch.roll(x, -1, dims=1)
    return eager, compiled, counter, x, y


def loss_and_grads(fn, model, x, y):
    model.zero_grad(set_to_none=True)
    loss = fn(x, y)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_compiled_model_matches_eager(models):
    eager, compiled, counter, x, y = models
    loss_e, grads_e = loss_and_grads(eager, eager, x, y)
    loss_c, grads_c = loss_and_grads(compiled, eager, x, y)
    assert counter.frame_count == 1
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=1e-5)
    assert grads_c.keys() == grads_e.keys()
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-3, atol=1e-5, msg=name)


def test_other_fp8_scales_reuse_the_compiled_graph(models):
    eager, compiled, counter, x, y = models
    loss_a, grads_a = loss_and_grads(compiled, eager, x, y)
    frames, ops = counter.frame_count, counter.op_count
    eager.set_fp8(True, 0.5, 0.01, 0.002)
    loss_b, grads_b = loss_and_grads(compiled, eager, x, y)
    # No new frame compiled and no recompilation: the scales are runtime tensors in the graph.
    assert (counter.frame_count, counter.op_count) == (frames, ops)
    assert not torch._dynamo.utils.counters["recompiles"]
    # ...and they really are used: the head gradient changes with the gradient scale.
    assert not torch.equal(grads_a["lm_head.weight"], grads_b["lm_head.weight"])
    eager_loss, _ = loss_and_grads(eager, eager, x, y)
    torch.testing.assert_close(loss_b, eager_loss, rtol=1e-5, atol=1e-5)
