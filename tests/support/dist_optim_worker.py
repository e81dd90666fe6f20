"""Runs DistAdam or Muon on every rank of a torchrun job (gloo) and saves what each rank ends with.

    torchrun --standalone --nproc_per_node=2 tests/dist_optim_worker.py {adam|muon} OUT_DIR

`launch` does that from a test. The scenario functions also run in one process without a process
group, which is how the tests build the single-process references they compare against.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

STEPS = 4
MICRO_BATCHES = 2
BATCH = 8
# "odd" and "vec" have sizes that do not divide 2 ranks: their Adam shards are padded.
ADAM_SHAPES = {"head": (10, 6), "vec": (7,), "odd": (5, 3), "unused": (4, 2)}
MUON_SHAPES = {"tall": (16, 8), "wide": (8, 24), "square": (12, 12), "unused": (8, 8)}


def init_params(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return {k: torch.nn.Parameter(torch.randn(s, generator=gen) * 0.5) for k, s in shapes.items()}


def adam_batch(step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1000 * step + micro)
    return torch.randn(BATCH, 6, generator=gen), torch.randint(0, 10, (BATCH,), generator=gen)


def adam_loss(params: dict, x: torch.Tensor, y: torch.Tensor, embed: torch.Tensor | None) -> torch.Tensor:
    h = torch.tanh(x * params["vec"][:6] + params["odd"].sum(0).repeat(2))
    if embed is not None:
        h = h + embed[y]
    return F.cross_entropy(h @ params["head"].T, y)


def run_adam(make_opt, untie, rank: int = 0, world: int = 1) -> dict:
    """Train the toy model on this rank's share of every batch (all of it when world == 1), untie
    a copy of "head" after STEPS steps, then train STEPS more.

    Step 0 never enables grad sync, so its reductions start in step(); later steps enable it for
    the last micro-batch only, so theirs start in backward hooks.
    """
    params = init_params(ADAM_SHAPES)
    opt = make_opt(params)
    share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    embed = None
    out: dict = {"pending": []}
    for step in range(2 * STEPS):
        if step == STEPS:
            embed = torch.nn.Parameter(params["head"].detach().clone())
            out["head_state_at_untie"], out["embed_state_at_untie"] = untie(opt, params["head"], embed)
        for micro in range(MICRO_BATCHES):
            if hasattr(opt, "set_grad_sync"):
                opt.set_grad_sync(step > 0 and micro == MICRO_BATCHES - 1)
            x, y = adam_batch(step, micro)
            (adam_loss(params, x[share], y[share], embed) / MICRO_BATCHES).backward()
            out["pending"].append(len(getattr(opt, "_pending", ())))
        opt.step()
        opt.zero_grad(set_to_none=True)
    out["params"] = {k: p.detach().clone() for k, p in params.items()} | {"embed": embed.detach().clone()}
    return out


def muon_grad(step: int, micro: int, rank: int, shape) -> torch.Tensor:
    gen = torch.Generator().manual_seed(10_000 * step + 100 * micro + rank)
    return torch.randn(shape, generator=gen)


def muon_momentum(step: int) -> float:
    return 0.85 + 0.10 * step / (STEPS - 1)


def run_muon_rank(make_opt, rank: int, world: int) -> dict:
    """Muon where rank r's gradient for micro-batch m is exactly muon_grad(step, m, r): the loss is
    linear in the parameters. Step 0 reduces in step(); later steps from hooks."""
    params = init_params(MUON_SHAPES)
    opt = make_opt(list(params.values()))
    out: dict = {"pending": []}
    for step in range(STEPS):
        opt.param_groups[0]["momentum"] = muon_momentum(step)
        for micro in range(MICRO_BATCHES):
            opt.set_grad_sync(step > 0 and micro == MICRO_BATCHES - 1)
            loss = sum((p * muon_grad(step, micro, rank, p.shape)).sum() for k, p in params.items() if k != "unused")
            loss.backward()
            out["pending"].append(len(opt._pending))
        opt.step()
        opt.zero_grad(set_to_none=True)
    out["params"] = {k: p.detach().clone() for k, p in params.items()}
    out["owned_state"] = sorted(k for k, p in params.items() if p in opt.state)
    return out


def distadam_untie(opt, head, embed):
    opt.add_param(embed, lr=0.02, copy_state_from=head)
    return opt.full_state(head), opt.full_state(embed)


def make_distadam(params):
    from trainer.optim.dist_adam import DistAdam

    opt = DistAdam([params["head"], params["unused"]], lr=0.03, betas=(0.9, 0.95), eps=1e-8)
    # A large eps makes Adam sensitive to the gradient's scale, so a sum instead of an average shows.
    opt.add_param_group({"params": [params["vec"], params["odd"]], "lr": 0.05, "weight_decay": 0.1, "eps": 1e-3})
    return opt


def make_muon(params):
    from trainer.optim.muon import Muon

    return Muon(params, lr=0.05, momentum=0.85, weight_decay=0.1)


def launch(scenario: str, out_dir: Path, nproc: int = 2) -> list[dict]:
    """Run a scenario under torchrun on CPU (gloo over loopback) and load every rank's result."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
         __file__, scenario, str(out_dir)],
        capture_output=True, text=True, env=env, cwd=root, timeout=180,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun {scenario} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(nproc)]


def main() -> None:
    scenario, out_dir = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if scenario == "adam":
        result = run_adam(make_distadam, distadam_untie, rank, world)
    else:
        result = run_muon_rank(make_muon, rank, world)
    torch.save(result, out_dir / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
