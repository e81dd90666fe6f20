"""Per-row quantizers and the per-tensor storage rules of the export."""
from __future__ import annotations

import pytest
import torch

from trainer.config import ConfigError
from trainer.export.quantize import (
    CLIP_FRACTIONS,
    ExportRules,
    decode,
    encode,
    quantize_rows_percentile,
    quantize_rows_search,
)
from trainer.export.schemes import INT6, INT8, SCHEMES, get_scheme

# Float rounding of x / s and of q * s can move a value a hair past exactly half a step.
STEP_SLACK = 1e-5


def heavy_tailed(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Student-t-like rows (a Gaussian divided by a random spread) have outliers worth clipping.
    x = torch.randn(rows, cols, generator=g) * 0.02
    return x / (torch.rand(rows, cols, generator=g) * 0.9 + 0.1).sqrt()


def grid_error(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """|dequantized - x clipped to the row's representable range|, in units of the row's step."""
    step = s.float()[:, None]
    clipped = torch.minimum(torch.maximum(x, qmin * step), qmax * step)
    return (q.float() * step - clipped).abs() / step


def test_int6_levels_and_scales_follow_the_format():
    x = heavy_tailed(64, 300)
    q, s = quantize_rows_search(x, INT6)
    assert q.dtype == torch.int8 and s.dtype == torch.float16 and s.shape == (64,)
    assert int(q.min()) >= -32 and int(q.max()) <= 31
    amax = x.abs().amax(dim=1)
    # each row's scale is clip / 31 (in fp16) for one of the clip candidates
    candidates = torch.stack([(amax * f / 31).to(torch.float16) for f in CLIP_FRACTIONS], dim=1)
    assert bool((candidates == s[:, None]).any(dim=1).all())


def test_every_int6_value_within_half_a_step_of_the_original():
    x = heavy_tailed(48, 257, seed=1)
    q, s = quantize_rows_search(x, INT6, fractions=(1.0,))
    err = (q.float() * s.float()[:, None] - x).abs() / s.float()[:, None]
    assert float(err.max()) <= 0.5 + STEP_SLACK
    # with the clip search, values inside the row's range are within half a step; outliers beyond it
    # land on the nearest end of the range
    q, s = quantize_rows_search(x, INT6)
    assert float(grid_error(x, q, s, -32, 31).max()) <= 0.5 + STEP_SLACK
    assert bool((s.float() < x.abs().amax(dim=1) / 31).any()), "heavy tails should make the search clip some rows"


def test_clip_search_picks_the_least_error_candidate_per_row():
    x = heavy_tailed(32, 200, seed=2)
    q, s = quantize_rows_search(x, INT6)
    chosen = (q.float() * s.float()[:, None] - x).square().sum(dim=1)
    for frac in CLIP_FRACTIONS:
        qf, sf = quantize_rows_search(x, INT6, fractions=(frac,))
        err = (qf.float() * sf.float()[:, None] - x).square().sum(dim=1)
        assert bool((chosen <= err * (1 + 1e-6)).all()), f"fraction {frac} beats the chosen clip on some row"


def test_int8_baseline_clips_at_the_percentile():
    x = heavy_tailed(16, 5000, seed=3)
    q, s = quantize_rows_percentile(x, INT8)
    assert int(q.abs().max()) <= 127
    expected = (torch.quantile(x.abs(), 0.9999984, dim=1) / 127).to(torch.float16)
    assert torch.equal(s, expected)
    assert float(grid_error(x, q, s, -127, 127).max()) <= 0.5 + STEP_SLACK


def test_zero_and_tiny_rows_stay_finite():
    x = torch.zeros(4, 100)
    x[1] = 1e-9
    q, s = quantize_rows_search(x, INT6)
    out = q.float() * s.float()[:, None]
    assert bool(torch.isfinite(out).all()) and bool((s > 0).all())
    assert float(out.abs().max()) <= 1e-4


def test_large_tensors_quantize_by_rows_and_keep_dtype():
    rules = ExportRules(passthrough_max_numel=1000)
    for dtype in (torch.float32, torch.bfloat16):
        t = heavy_tailed(40, 60, seed=4).reshape(40, 6, 10).to(dtype)
        enc = encode("blocks.0.conv.weight", t, rules)
        assert enc.scheme == "int6_row" and enc.data.shape == (40, 60)
        out = decode(enc)
        assert out.dtype == dtype and out.shape == t.shape
        rows = t.float().reshape(40, 60)
        assert float(grid_error(rows, enc.data, enc.scale, -32, 31).max()) <= 0.5 + STEP_SLACK


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_storage_rules_in_order(scheme):
    matrix = get_scheme(scheme).matrix_format.name
    rules = ExportRules(scheme=scheme, embed="int8", embed_names=("wte.weight",), passthrough_max_numel=100)
    big = torch.randn(20, 10)
    assert rules.tensor_scheme("step_count", torch.arange(200)) == "raw"
    assert rules.tensor_scheme("wte.weight", torch.randn(4, 4)) == "int8_row"     # the embedding, even small
    assert rules.tensor_scheme("lm_head.weight", big) == matrix                  # not an embedding name here
    assert rules.tensor_scheme("blocks.0.attn_scale", big) == "raw"              # control, even large
    assert rules.tensor_scheme("blocks.0.resid_mix", torch.randn(2, 8)) == "raw"
    assert rules.tensor_scheme("blocks.0.attn.c_q.weight", torch.randn(10, 10)) == "fp16"
    assert rules.tensor_scheme("blocks.0.attn.c_q.weight", big) == matrix
    assert rules.tensor_scheme("half.weight", torch.randn(5).half()) == "raw"     # already fp16
    assert rules.tensor_scheme("huge.weight", torch.full((5,), 1e6)) == "raw"     # outside fp16's range


@pytest.mark.parametrize("embed,expected", [("fp16", "fp16"), ("int8", "int8_row"), ("int6", "int6_row")])
def test_embedding_choice_applies_to_the_tied_head_and_the_untied_embedding(embed, expected):
    rules = ExportRules(embed=embed)
    for name in ("lm_head.weight", "tok_emb.weight"):
        assert rules.tensor_scheme(name, torch.randn(1024, 512)) == expected


def test_passthrough_is_bit_exact():
    rules = ExportRules()
    control = torch.randn(512, dtype=torch.float32)
    enc = encode("blocks.3.mlp_scale", control, rules)
    assert enc.scheme == "raw" and torch.equal(decode(enc), control) and decode(enc).dtype == torch.float32
    small = torch.randn(64, 64, dtype=torch.float32)
    enc = encode("blocks.0.attn.c_k.weight", small, rules)
    assert enc.scheme == "fp16"
    out = decode(enc)
    assert out.dtype == torch.float32 and torch.equal(out, small.half().float())
    ints = torch.randint(-5, 5, (3, 7))
    assert torch.equal(decode(encode("counts", ints, rules)), ints)


def test_non_finite_weights_are_refused_with_the_tensor_name():
    t = torch.randn(300, 300)
    t[5, 5] = float("nan")
    with pytest.raises(ValueError, match="blocks.1.mlp.fc.weight"):
        encode("blocks.1.mlp.fc.weight", t, ExportRules())


def test_bad_scheme_or_embed_names_the_config_key():
    with pytest.raises(ConfigError) as e:
        ExportRules(scheme="int4_lzma")
    assert e.value.key == "export.scheme"
    with pytest.raises(ConfigError) as e:
        ExportRules(embed="bf16")
    assert e.value.key == "export.embed"
    with pytest.raises(ValueError, match="clip_fractions"):
        ExportRules(clip_fractions=(1.5,))
