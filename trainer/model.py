"""GPT in the parameter-golf baseline shape.

RMSNorm without weight, RoPE, grouped-query attention, ReLU-squared MLP, encoder/decoder skip connections
(the first half of the blocks feeds the second half in reverse order), tanh logit softcap and zero-initialised
output projections. The input embedding reads the LM head weight until `untie()` gives it its own copy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.fp8.op import CastedLinear

# Parameters whose names contain one of these are per-channel gains and mixes: tiny, sensitive, and
# trained by Adam (and exported without quantisation) rather than by Muon.
CONTROL_NAMES = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights")
HEAD_WEIGHT = "lm_head.weight"
EMBED_WEIGHT = "tok_emb.weight"


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


class Rotary(nn.Module):
    def __init__(self, head_dim: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, seq_len: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.arange(seq_len, device=device, dtype=torch.float32)
        freqs = torch.outer(t, self.inv_freq.to(device))
        return freqs.cos().to(dtype)[None, None], freqs.sin().to(dtype)[None, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


def linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    # Weights stay fp32 (optimizer precision); the matmul runs in the activation dtype.
    return F.linear(x, layer.weight.to(x.dtype))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, rope_base: float, qk_gain_init: float):
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        kv_dim = num_kv_heads * self.head_dim
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, kv_dim, bias=False)
        self.c_v = nn.Linear(dim, kv_dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        nn.init.zeros_(self.proj.weight)
        self.q_gain = nn.Parameter(torch.full((num_heads,), qk_gain_init))
        self.rotary = Rotary(self.head_dim, rope_base)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q = linear(x, self.c_q).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = linear(x, self.c_k).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = linear(x, self.c_v).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        cos, sin = self.rotary(t, x.device, q.dtype)
        q = apply_rotary(rms_norm(q), cos, sin) * self.q_gain.to(q.dtype)[None, :, None, None]
        k = apply_rotary(rms_norm(k), cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           enable_gqa=self.num_kv_heads != self.num_heads)
        return linear(y.transpose(1, 2).reshape(b, t, d), self.proj)


class MLP(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        self.fc = nn.Linear(dim, mult * dim, bias=False)
        self.proj = nn.Linear(mult * dim, dim, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(torch.relu(linear(x, self.fc)).square(), self.proj)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, mlp_mult: int, rope_base: float,
                 qk_gain_init: float):
        super().__init__()
        self.attn = Attention(dim, num_heads, num_kv_heads, rope_base, qk_gain_init)
        self.mlp = MLP(dim, mlp_mult)
        self.attn_scale = nn.Parameter(torch.ones(dim))
        self.mlp_scale = nn.Parameter(torch.ones(dim))
        # Row 0 weighs the running residual, row 1 the embedding output x0.
        self.resid_mix = nn.Parameter(torch.stack((torch.ones(dim), torch.zeros(dim))))

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        mix = self.resid_mix.to(x.dtype)
        x = mix[0] * x + mix[1] * x0
        x = x + self.attn_scale.to(x.dtype) * self.attn(rms_norm(x))
        return x + self.mlp_scale.to(x.dtype) * self.mlp(rms_norm(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, num_layers: int, model_dim: int, num_heads: int, num_kv_heads: int,
                 mlp_mult: int, rope_base: float, logit_softcap: float, tied_embed_init_std: float,
                 qk_gain_init: float, untied: bool = False):
        super().__init__()
        self.logit_softcap = logit_softcap
        self.lm_head = CastedLinear(model_dim, vocab_size)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=tied_embed_init_std)
        self.tok_emb: nn.Embedding | None = None
        self.blocks = nn.ModuleList(Block(model_dim, num_heads, num_kv_heads, mlp_mult, rope_base, qk_gain_init)
                                    for _ in range(num_layers))
        self.num_encoder = num_layers // 2
        self.skip_weights = nn.Parameter(torch.ones(min(self.num_encoder, num_layers - self.num_encoder), model_dim))
        if untied:
            self.untie()

    @classmethod
    def from_config(cls, cfg, untied: bool = False) -> "GPT":
        m = cfg.model
        return cls(m.vocab_size, m.num_layers, m.model_dim, m.num_heads, m.num_kv_heads, m.mlp_mult,
                   m.rope_base, m.logit_softcap, m.tied_embed_init_std, m.qk_gain_init, untied=untied)

    @property
    def tied(self) -> bool:
        return self.tok_emb is None

    def untie(self) -> nn.Parameter:
        """Give the input embedding its own weight, starting as a copy of the LM head weight."""
        if not self.tied:
            raise RuntimeError("the embedding is already untied")
        head = self.lm_head.weight
        self.tok_emb = nn.Embedding(head.size(0), head.size(1), device=head.device, dtype=head.dtype)
        with torch.no_grad():
            self.tok_emb.weight.copy_(head)
        return self.tok_emb.weight

    def set_fp8(self, enabled: bool, x_s: float, w_s: float, grad_s: float, loss_tokens: float = 1.0) -> None:
        self.lm_head.fp8 = enabled
        self.lm_head.set_fp8_scales(x_s, w_s, grad_s)
        self.lm_head.set_loss_tokens(loss_tokens)

    def hidden(self, idx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        weight = self.lm_head.weight if self.tied else self.tok_emb.weight
        x = rms_norm(F.embedding(idx, weight).to(dtype))
        x0 = x
        skips = []
        for i, block in enumerate(self.blocks):
            if i >= self.num_encoder:
                j = i - self.num_encoder
                if j < len(skips) and j < self.skip_weights.size(0):
                    x = x + self.skip_weights[j].to(dtype) * skips[-1 - j]
            x = block(x, x0)
            if i < self.num_encoder:
                skips.append(x)
        return rms_norm(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype = torch.float32,
                reduction: str = "mean") -> torch.Tensor:
        logits = self.lm_head(self.hidden(idx, dtype)).float()
        logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)


def parameter_groups(model: GPT) -> dict[str, list[nn.Parameter]]:
    """Split parameters by optimizer: Muon takes the block matrices, Adam the rest."""
    groups: dict[str, list[nn.Parameter]] = {"matrix": [], "control": [], "head": [], "embed": []}
    for name, p in model.named_parameters():
        if name == HEAD_WEIGHT:
            groups["head"].append(p)
        elif name == EMBED_WEIGHT:
            groups["embed"].append(p)
        elif p.ndim == 2 and name.startswith("blocks.") and not any(c in name for c in CONTROL_NAMES):
            groups["matrix"].append(p)
        else:
            groups["control"].append(p)
    return groups


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_flops_per_token(model: GPT, seq_len: int) -> float:
    """Training FLOPs per token (6N for the matmuls plus the attention term), for MFU figures."""
    n = count_params(model) - (0 if model.tied else model.tok_emb.weight.numel())
    attn = sum(12 * b.attn.num_heads * b.attn.head_dim * seq_len for b in model.blocks) / 2
    return 6.0 * n + attn

