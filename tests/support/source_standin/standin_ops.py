"""The stand-in's loss, a module beside train_standin.py that it imports (as modded-nanogpt's script imports
triton_kernels): lowest at x_s 0.2, grad_s 0.002 (upstream units), cooldown 0.55, and a little worse for
every other knob, so each trial's loss says which values it ran with."""
import math


def read_table(text: str) -> float:
    """The base loss from standin_table.txt (`base_loss <value>`)."""
    (value,) = [line.split()[1] for line in text.splitlines() if line.startswith("base_loss ")]
    return float(value)


def final_loss(knobs: dict, base: float) -> float:
    return (base + 0.3 * math.log(knobs["x_s"] / 0.2) ** 2 + 0.2 * math.log(knobs["grad_s"] / 0.002) ** 2
            + 0.5 * (knobs["cooldown_frac"] - 0.55) ** 2 + 0.01 * knobs["split_embed_stage"]
            + 0.1 * knobs["lr_floor"] + 0.02 * knobs["smear_x_s"] + 1.0 / knobs["iterations"]
            + 0.002 * ((knobs["seed"] * 7919) % 11) / 11)


def loss_at(final: float, step: int, total: int) -> float:
    return final + 0.5 * (1 - step / total)
