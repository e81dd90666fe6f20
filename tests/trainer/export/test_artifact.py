"""The artifact file (round trip, codecs, rejection of bad files) and the submission size accounting."""
from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib

import pytest
import torch
import yaml
import zstandard
from paths import REPO
from torch import nn

from trainer.export.accounting import code_bytes, code_files, size_report
from trainer.export.artifact import (
    FORMAT_VERSION,
    HEADER,
    ArtifactError,
    load_artifact,
    manifest_path,
    read_manifest,
    save_artifact,
)
from trainer.export.quantize import ExportRules, encode, quantization_step
from trainer.model import GPT

STEP_SLACK = 1e-5


def synthetic_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "lm_head.weight": torch.randn(300, 256, generator=g) * 0.05,
        "blocks.0.mlp.fc.weight": torch.randn(512, 160, generator=g) * 0.02,
        "blocks.0.attn.c_q.weight": (torch.randn(300, 300, generator=g) * 0.02).bfloat16(),
        "blocks.0.attn_scale": torch.rand(256, generator=g),
        "blocks.0.resid_mix": torch.randn(2, 256, generator=g),
        "small.weight": torch.randn(16, 16, generator=g),
        "half.weight": torch.randn(8, 8, generator=g).half(),
        "steps": torch.tensor(12345, dtype=torch.int64),
        "mask": torch.rand(10, generator=g) > 0.5,
        "empty": torch.empty(0, 4),
    }


def small_gpt(untied: bool = False) -> GPT:
    torch.manual_seed(0)
    return GPT(vocab_size=256, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2, mlp_mult=2,
               rope_base=10000.0, logit_softcap=30.0, tied_embed_init_std=0.05, qk_gain_init=1.5, untied=untied)


@pytest.mark.parametrize("scheme", ["int6_zstd", "int8_zlib"])
def test_round_trip_through_the_file(tmp_path, scheme):
    state = synthetic_state()
    rules = ExportRules(scheme=scheme, embed="int6", clip_fractions=(1.0,))
    path = tmp_path / "model.ptz"
    info = save_artifact(state, path, rules=rules)
    assert info.artifact_bytes == os.path.getsize(path)
    loaded = load_artifact(path)
    assert list(loaded) == list(state)
    for name, original in state.items():
        out = loaded[name]
        assert out.dtype == original.dtype and out.shape == original.shape, name
        enc = encode(name, original, rules)
        if enc.scale is None:
            expected = original.half().to(original.dtype) if enc.scheme == "fp16" else original
            assert torch.equal(out, expected), f"{name} ({enc.scheme}) is not bit-exact"
        elif original.dtype == torch.float32:
            err = (out - original).abs() / quantization_step(enc)
            assert float(err.max()) <= 0.5 + STEP_SLACK, name
    schemes = {e["name"]: e["scheme"] for e in info.manifest["tensors"]}
    matrix = "int6_row" if scheme == "int6_zstd" else "int8_row"
    assert schemes["blocks.0.mlp.fc.weight"] == matrix and schemes["lm_head.weight"] == "int6_row"
    assert schemes["blocks.0.attn_scale"] == "raw" and schemes["small.weight"] == "fp16"


def test_manifest_records_version_scheme_dtype_shape(tmp_path):
    path = tmp_path / "m.ptz"
    info = save_artifact(synthetic_state(), path, scheme="int6_zstd", embed="fp16")
    manifest = read_manifest(path)
    assert manifest == info.manifest == json.loads(manifest_path(path).read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["scheme"] == "int6_zstd"
    entry = next(e for e in manifest["tensors"] if e["name"] == "blocks.0.attn.c_q.weight")
    assert (entry["scheme"], entry["dtype"], entry["shape"]) == ("int6_row", "bfloat16", [300, 300])
    assert next(e for e in manifest["tensors"] if e["name"] == "lm_head.weight")["scheme"] == "fp16"


def test_codecs_are_zstd22_and_zlib9(tmp_path):
    state = synthetic_state()
    for scheme in ("int6_zstd", "int8_zlib"):
        path = tmp_path / f"{scheme}.ptz"
        save_artifact(state, path, scheme=scheme)
        payload = path.read_bytes()[HEADER.size:]
        if scheme == "int6_zstd":
            body = zstandard.ZstdDecompressor().decompress(payload)
            assert payload == zstandard.ZstdCompressor(level=22).compress(body)
        else:
            assert payload == zlib.compress(zlib.decompress(payload), 9)


def test_int6_zstd_is_smaller_than_the_int8_zlib_baseline(tmp_path):
    g = torch.Generator().manual_seed(1)
    state = {f"blocks.{i}.mlp.fc.weight": torch.randn(512, 256, generator=g) * 0.02 for i in range(2)}
    int6 = save_artifact(state, tmp_path / "a.ptz", scheme="int6_zstd").artifact_bytes
    int8 = save_artifact(state, tmp_path / "b.ptz", scheme="int8_zlib").artifact_bytes
    assert int6 < 0.85 * int8


@pytest.mark.parametrize("scheme", ["int6_zstd", "int8_zlib"])
@pytest.mark.parametrize("untied", [False, True])
def test_a_real_model_loads_strictly_and_still_works(tmp_path, scheme, untied):
    model = small_gpt(untied)
    # a lower passthrough size makes this small model's matrices go through the quantizer
    rules = ExportRules(scheme=scheme, embed="int8", passthrough_max_numel=2048)
    path = tmp_path / "gpt.ptz"
    info = save_artifact(model.state_dict(), path, rules=rules)
    assert info.tensor_counts.get("int6_row" if scheme == "int6_zstd" else "int8_row", 0) >= 8
    fresh = small_gpt(untied)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    fresh.load_state_dict(load_artifact(path), strict=True)
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert a.dtype == b.dtype and a.shape == b.shape, name
    x = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, got = model(x, x.roll(-1, 1)).item(), fresh(x, x.roll(-1, 1)).item()
    assert abs(got - ref) < 0.01 * ref


def test_mixed_dtype_module_with_buffers_loads_strictly(tmp_path):
    model = nn.Sequential(nn.Linear(300, 400).to(torch.bfloat16), nn.BatchNorm1d(400), nn.Linear(400, 8).half())
    save_artifact(model.state_dict(), tmp_path / "seq.ptz", scheme="int6_zstd")
    loaded = load_artifact(tmp_path / "seq.ptz")
    fresh = nn.Sequential(nn.Linear(300, 400).to(torch.bfloat16), nn.BatchNorm1d(400), nn.Linear(400, 8).half())
    fresh.load_state_dict(loaded, strict=True)
    assert loaded["1.num_batches_tracked"].dtype == torch.int64
    assert loaded["0.weight"].dtype == torch.bfloat16 and torch.equal(loaded["2.weight"], model[2].weight)


def test_a_tensor_shared_under_two_names_is_stored_once(tmp_path):
    weight = torch.randn(512, 256) * 0.02
    once = save_artifact({"lm_head.weight": weight}, tmp_path / "once.ptz", embed="fp16")
    twice = save_artifact({"lm_head.weight": weight, "tok_emb.weight": weight}, tmp_path / "twice.ptz", embed="fp16")
    assert twice.artifact_bytes < once.artifact_bytes + 200
    assert {"name": "tok_emb.weight", "alias_of": "lm_head.weight"} in twice.manifest["tensors"]
    loaded = load_artifact(tmp_path / "twice.ptz")
    assert torch.equal(loaded["tok_emb.weight"], loaded["lm_head.weight"])


# ---- bad files ----

@pytest.fixture(scope="module")
def good_artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("artifact") / "good.ptz"
    save_artifact(synthetic_state(), path, scheme="int6_zstd")
    return path


def write_variant(tmp_path, blob: bytes, name: str = "bad.ptz"):
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def expect_error(path, *words):
    with pytest.raises(ArtifactError) as e:
        load_artifact(path)
    message = str(e.value)
    assert str(path) in message
    for word in words:
        assert word in message, message
    return message


@pytest.mark.parametrize("cut", [lambda n: n - 1, lambda n: n // 2, lambda n: 20, lambda n: 4],
                         ids=["last-byte", "half", "inside-header", "inside-magic"])
def test_truncated_artifact(tmp_path, good_artifact, cut):
    blob = good_artifact.read_bytes()
    expect_error(write_variant(tmp_path, blob[:cut(len(blob))]), "truncated")


def test_corrupted_payload(tmp_path, good_artifact):
    blob = bytearray(good_artifact.read_bytes())
    blob[HEADER.size + len(blob) // 3] ^= 0x40
    expect_error(write_variant(tmp_path, bytes(blob)), "corrupted", "checksum")
    expect_error(write_variant(tmp_path, bytes(good_artifact.read_bytes()) + b"\0\0", "long.ptz"), "corrupted")


def test_wrong_version_and_wrong_magic(tmp_path, good_artifact):
    blob = bytearray(good_artifact.read_bytes())
    struct.pack_into("<H", blob, 8, FORMAT_VERSION + 1)
    expect_error(write_variant(tmp_path, bytes(blob)), f"version {FORMAT_VERSION + 1}")
    expect_error(write_variant(tmp_path, b"PK\x03\x04" + bytes(60), "zip.ptz"), "not a model artifact")
    expect_error(write_variant(tmp_path, b"", "empty.ptz"), "not a model artifact")
    expect_error(tmp_path / "absent.ptz", "no such artifact file")


def rewrite_manifest(path, edit) -> bytes:
    """The artifact at `path` with its manifest edited and a valid header, as a corruption that the
    checksum cannot catch."""
    blob = path.read_bytes()
    magic, version, codec, flags, _, _, _ = HEADER.unpack_from(blob)
    body = zstandard.ZstdDecompressor().decompress(blob[HEADER.size:])
    (n,) = struct.unpack_from("<I", body)
    manifest = json.loads(body[4:4 + n])
    edit(manifest)
    text = json.dumps(manifest).encode()
    body = struct.pack("<I", len(text)) + text + body[4 + n:]
    payload = zstandard.ZstdCompressor(level=3).compress(body)
    return HEADER.pack(magic, version, codec, flags, len(body), len(payload), zlib.crc32(payload)) + payload


def test_inconsistent_manifest_is_rejected(tmp_path, good_artifact):
    def grow_shape(m):
        m["tensors"][1]["shape"] = [1024, 160]

    def bad_dtype(m):
        m["tensors"][0]["dtype"] = "complex_float99"

    def bad_scheme(m):
        m["tensors"][0]["scheme"] = "int3_row"

    def old_version(m):
        m["format_version"] = 0

    expect_error(write_variant(tmp_path, rewrite_manifest(good_artifact, grow_shape), "a.ptz"),
                 "blocks.0.mlp.fc.weight", "byte range")
    expect_error(write_variant(tmp_path, rewrite_manifest(good_artifact, bad_dtype), "b.ptz"), "unknown dtype")
    expect_error(write_variant(tmp_path, rewrite_manifest(good_artifact, bad_scheme), "c.ptz"), "unknown tensor scheme")
    expect_error(write_variant(tmp_path, rewrite_manifest(good_artifact, old_version), "d.ptz"), "version 0")


# ---- size accounting ----

def test_code_bytes_counts_python_sources_only(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub" / "__pycache__").mkdir(parents=True)
    (pkg / "presets").mkdir()
    (pkg / "__init__.py").write_text("x = 1\n")
    (pkg / "sub" / "mod.py").write_bytes("# é\n".encode() * 10)
    (pkg / "sub" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0" * 999)
    (pkg / "sub" / "__pycache__" / "stale.py").write_text("y = 2\n" * 50)
    (pkg / "presets" / "base.yaml").write_text("a: 1\n" * 100)
    assert code_bytes(pkg) == len("x = 1\n") + 10 * len("# é\n".encode())
    assert [p.name for p in code_files(pkg)] == ["__init__.py", "mod.py"]


def test_code_bytes_of_the_trainer_cover_its_sources():
    import trainer
    root = os.path.dirname(trainer.__file__)
    expected = sum(os.path.getsize(os.path.join(d, f)) for d, dirs, files in os.walk(root)
                   if "__pycache__" not in d for f in files if f.endswith(".py"))
    assert code_bytes() == expected
    names = {p.name for p in code_files()}
    assert {"model.py", "artifact.py", "config.py"} <= names


def test_size_report_fits_at_the_limit_and_not_above():
    at_limit = size_report(15_900_000, max_bytes=16_000_000, code=100_000)
    assert at_limit.total_bytes == 16_000_000 and at_limit.fits
    over = size_report(15_900_001, max_bytes=16_000_000, code=100_000)
    assert not over.fits and over.fields()["total_bytes"] == 16_000_001
    assert size_report(1000).code_bytes == code_bytes()


# ---- export at the end of a run, and the export command on a saved run ----

TINY_FAST = ["train.iterations=3", "train.warmdown_iters=1", "train.batch_tokens=1024", "train.seq_len=128",
             "train.micro_batches=2", "train.val_tokens=4096", "train.val_batch_tokens=4096", "train.val_every=0"]
EXPORT_FIELDS = {"artifact_bytes", "code_bytes", "total_bytes", "roundtrip_val_loss", "roundtrip_val_bpb",
                 "fits", "max_bytes", "scheme", "embed", "compress_seconds", "load_seconds", "eval_time_ms"}


def run_events(run_dir, name):
    with open(os.path.join(run_dir, "events.jsonl")) as f:
        return [e for e in map(json.loads, f) if e["event"] == name]


def trainer_command(*args, ranks: int = 1):
    launch = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
              if ranks > 1 else [sys.executable])
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launch, "-m", "trainer", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    cache = tmp_path_factory.mktemp("cache")
    done = trainer_command("--preset", "tiny", "--run-dir", str(run_dir), f"data.cache_dir={cache}",
                           "export.enabled=true", *TINY_FAST)
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.mark.slow
def test_export_event_after_a_tiny_run_with_export_on(tiny_run):
    (event,) = run_events(tiny_run, "export")
    assert EXPORT_FIELDS <= set(event)
    assert event["scheme"] == "int6_zstd" and event["embed"] == "fp16" and event["fits"] is True
    assert event["artifact_bytes"] == os.path.getsize(tiny_run / "model.int6.ptz")
    assert event["code_bytes"] == code_bytes()
    assert event["total_bytes"] == event["artifact_bytes"] + event["code_bytes"]
    (final,) = run_events(tiny_run, "final")
    # the tiny model is small enough that every tensor passes through (fp16 or exact)
    assert abs(event["roundtrip_val_loss"] - final["val_loss"]) < 1e-3
    log = (tiny_run / "train.log").read_text()
    assert re.search(r"^Serialized model int6\+zstd: \d+ bytes", log, re.M)
    assert re.search(rf"^Total submission size int6\+zstd: {event['total_bytes']} bytes$", log, re.M)
    assert re.search(r"^final_int6_zstd_roundtrip val_loss:\d+\.\d{4} val_bpb:\d+\.\d{4} eval_time:\d+ms$", log, re.M)
    assert re.search(r"^final_int6_zstd_roundtrip_exact val_loss:\d+\.\d{8} val_bpb:\d+\.\d{8}$", log, re.M)


@pytest.mark.slow
def test_export_command_on_a_saved_run(tiny_run, capsys):
    from trainer.config import load_config
    from trainer.export.cli import main
    assert main([str(tiny_run), "export.scheme=int8_zlib", "export.embed=int6"]) == 0
    out = capsys.readouterr().out
    assert "Serialized model int8+zlib:" in out and "final_int8_zlib_roundtrip_exact val_loss:" in out
    event = run_events(tiny_run, "export")[-1]
    assert (event["scheme"], event["embed"]) == ("int8_zlib", "int6") and EXPORT_FIELDS <= set(event)
    assert event["step"] == run_events(tiny_run, "final")[-1]["step"]
    manifest = read_manifest(tiny_run / "model.int8.ptz")
    assert next(e for e in manifest["tensors"] if e["name"] == "lm_head.weight")["scheme"] == "int6_row"
    model = GPT.from_config(load_config(None, tiny_run / "config.yaml"))
    model.load_state_dict(load_artifact(tiny_run / "model.int8.ptz"), strict=True)
    # an int6 head changes the model, and the round-trip loss sees it
    (final,) = run_events(tiny_run, "final")
    assert event["roundtrip_val_loss"] != pytest.approx(final["val_loss"], abs=1e-7)
    assert event["roundtrip_val_loss"] == pytest.approx(final["val_loss"], abs=0.05)


@pytest.mark.slow
def test_a_total_over_the_limit_is_a_result_not_a_crash(tiny_run, capsys):
    from trainer.export.cli import main
    assert main([str(tiny_run), "export.max_bytes=100000"]) == 0
    event = run_events(tiny_run, "export")[-1]
    assert event["fits"] is False and event["max_bytes"] == 100000 and event["total_bytes"] > 100000
    assert "fits:false" in capsys.readouterr().out


def test_export_command_rejects_bad_input(tmp_path, tiny_run, capsys):
    from trainer.export.cli import main
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "config.yaml").write_text((tiny_run / "config.yaml").read_text())
    assert main([str(tmp_path)]) == 2
    assert "model.pt" in capsys.readouterr().err
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    config["train"]["save_model"] = False
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert main([str(tmp_path)]) == 2
    assert "train.save_model=false" in capsys.readouterr().err
    assert main([str(tiny_run), "export.scheme=int4"]) == 2
    assert "export.scheme" in capsys.readouterr().err
    events_before = len(run_events(tiny_run, "export"))
    assert main([str(tiny_run), "model.model_dim=64", "model.num_heads=2", "model.num_kv_heads=2"]) == 2
    assert "does not match" in capsys.readouterr().err
    assert len(run_events(tiny_run, "export")) == events_before


def test_export_command_under_torchrun_evaluates_on_every_rank(tiny_run):
    from trainer.export.cli import main
    assert main([str(tiny_run), "export.embed=int8"]) == 0
    single = run_events(tiny_run, "export")[-1]
    done = trainer_command("export", str(tiny_run), "export.embed=int8", ranks=2)
    assert done.returncode == 0, done.stderr
    after = run_events(tiny_run, "export")
    assert after[-2] == single, "only rank 0 writes the event"
    # the validation sums are split over the two ranks and all-reduced in float64
    assert after[-1]["roundtrip_val_loss"] == pytest.approx(single["roundtrip_val_loss"], rel=1e-9)
    assert after[-1]["artifact_bytes"] == single["artifact_bytes"]
