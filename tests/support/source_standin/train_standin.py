"""A stand-in for modded-nanogpt's train_gpt.py, for the source-mode tests. Like the original it reads no
hyperparameter from its environment or arguments: every knob is a literal in this file, at each kind of
site source mode addresses (a module-level assignment, keywords of a call inside a class's __init__, a
dataclass field, a parameter default, and two calls with the same keyword). Also like the original it
reads its own source and a file beside sys.argv[0] first, imports a module that sits beside it, writes
logs/<run_id>.txt under its working folder starting with its own source, and prints modded-nanogpt's step
lines. No torch: a run takes a fraction of a second (STEP_SECONDS per step).

Its val_loss follows from every knob (standin_ops.final_loss), so a test can tell which values a run
really had; `Hyperparameters.jitter` adds nondeterministic noise, as between repeats of the original.
"""
import os
import sys

with open(sys.argv[0]) as f:
    code = f.read()
with open(os.path.join(os.path.dirname(sys.argv[0]), "standin_table.txt")) as f:
    table = f.read()
    code += f"\n# standin_table.txt\n{table}"

import random
import time
import uuid
from dataclasses import dataclass

from standin_ops import final_loss, loss_at, read_table

world_size = int(os.environ.get("WORLD_SIZE", "1"))
grad_scale = 1 / (8 // world_size)
LR_FLOOR = 0.1
STEP_SECONDS = 0.0


class CastedLinearT:
    def __init__(self, use_fp8=False, x_s=1.0, w_s=1.0, grad_s=1.0):
        self.use_fp8, self.x_s, self.w_s, self.grad_s = use_fp8, x_s, w_s, grad_s


class CastedLinear:
    def __init__(self, width, x_s=1.0):
        self.width, self.x_s = width, x_s


class GPT:
    def __init__(self):
        self.lm_head = CastedLinearT(use_fp8=True, x_s=100/448, w_s=1.6/448, grad_s=grad_scale * 0.75/448)
        self.attn_gate = CastedLinear(12, x_s=1.0)
        self.smear_gate = CastedLinear(12,
                                       x_s=1.0)  # smear gate


@dataclass
class Hyperparameters:
    num_scheduled_iterations: int = 20
    val_loss_every: int = 5
    seed: int = 0
    jitter: float = 0.0
    run_id: str = f"{uuid.uuid4()}"


class TrainingSchedule:
    def __init__(self, iterations, cooldown_frac=0.5, split_embed_stage: int = 2):
        self.iterations, self.cooldown_frac, self.split_embed_stage = iterations, cooldown_frac, split_embed_stage


args = Hyperparameters()
schedule = TrainingSchedule(args.num_scheduled_iterations, cooldown_frac=0.60)
model = GPT()

os.makedirs("logs", exist_ok=True)
logfile = f"logs/{args.run_id}.txt"
print(logfile)


def print0(s, console=False):
    with open(logfile, "a") as f:
        if console:
            print(s, flush=True)
        print(s, file=f)


print0(code)
print0("=" * 100)
knobs = {"x_s": model.lm_head.x_s, "grad_s": model.lm_head.grad_s / grad_scale, "cooldown_frac": schedule.cooldown_frac,
         "split_embed_stage": schedule.split_embed_stage, "lr_floor": LR_FLOOR, "smear_x_s": model.smear_gate.x_s,
         "iterations": schedule.iterations, "seed": args.seed}
final = final_loss(knobs, read_table(table)) + args.jitter * random.random()
total = schedule.iterations
for step in range(total + 1):
    time.sleep(STEP_SECONDS)
    ms = 40.0 * step
    if step == total or step % args.val_loss_every == 0:
        print0(f"step:{step}/{total} val_loss:{loss_at(final, step, total):.4f} train_time:{ms:.0f}ms "
               f"step_avg:{ms / max(step, 1):.2f}ms", console=True)
    elif step:
        print0(f"step:{step}/{total} train_time:{ms:.0f}ms step_avg:40.00ms", console=True)
print0("peak memory allocated: 123 MiB reserved: 150 MiB", console=True)
