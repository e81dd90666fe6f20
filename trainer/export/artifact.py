"""The exported model file: a versioned, checksummed container of quantized tensors.

Layout (little-endian):

    header   32 bytes: magic (8) | format version u16 | codec u8 (1 zstd, 2 zlib) | flags u8 (0)
                       | body length u64 | payload length u64 | CRC-32 of the payload u32
    payload  the body compressed with the scheme's codec (zstd level 22 or zlib level 9)

    body     manifest length u32 | manifest (UTF-8 JSON) | tensor bytes

The manifest records the format version, the export scheme, the embedding choice and, for every tensor in
state-dict order, its tensor scheme (`raw`, `fp16`, `int6_row`, `int8_row`), original dtype, shape, and the
offset/length of its bytes (and of its fp16 row scales) in the tensor bytes. A tensor that shares storage
with an earlier one (a tied weight listed under two names) is stored once and listed with `alias_of`.
Tensor bytes are grouped by kind (int8 levels, then scales, then floats) because like data compresses better
together. Every way a file can be wrong raises `ArtifactError` naming the file and the problem.
"""
from __future__ import annotations

import json
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
import zstandard
from torch import Tensor

from trainer.export.quantize import EMBED_NAMES, TENSOR_SCHEMES, EncodedTensor, ExportRules, decode, encode
from trainer.export.schemes import ROW_FORMATS, get_scheme

FORMAT_VERSION = 1
MAGIC = b"\x89GSW\r\n\x1a\n"
HEADER = struct.Struct("<8sHBBQQI")
CODECS = {"zstd": 1, "zlib": 2}
CODEC_NAMES = {v: k for k, v in CODECS.items()}
MANIFEST_SUFFIX = ".manifest.json"
GROUP_ORDER = ("levels", "scales", "floats")


class ArtifactError(ValueError):
    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


@dataclass
class ArtifactInfo:
    path: Path
    scheme: str
    embed: str
    artifact_bytes: int                # size of the file on disk
    payload_bytes: int                 # uncompressed body (manifest + tensor bytes)
    tensor_counts: dict[str, int]      # tensor scheme -> number of tensors stored under it
    compress_seconds: float            # quantize + compress + write
    manifest: dict = field(repr=False)


def manifest_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + MANIFEST_SUFFIX)


def _as_bytes(t: Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _compress(body: bytes, codec: str, level: int) -> bytes:
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=level).compress(body)
    return zlib.compress(body, level)


def _decompress(payload: bytes, codec: str, body_len: int) -> bytes:
    if codec == "zstd":
        return zstandard.ZstdDecompressor().decompress(payload, max_output_size=body_len)
    return zlib.decompress(payload)


def _storage_key(t: Tensor) -> tuple:
    return (t.device.type, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()),
            t.dtype)


def _encode_all(state_dict: Mapping[str, Tensor], rules: ExportRules) -> tuple[list[dict], bytes]:
    groups: dict[str, list[bytes]] = {g: [] for g in GROUP_ORDER}
    sizes = dict.fromkeys(GROUP_ORDER, 0)
    placed: list[tuple[dict, str, str]] = []   # (entry, offset field prefix, group)
    entries: list[dict] = []
    seen: dict[tuple, str] = {}

    def place(entry: dict, prefix: str, group: str, data: bytes) -> None:
        entry[f"{prefix}offset"] = sizes[group]
        entry[f"{prefix}nbytes"] = len(data)
        groups[group].append(data)
        sizes[group] += len(data)
        placed.append((entry, prefix, group))

    for name, tensor in state_dict.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"state dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
        key = _storage_key(tensor)
        if tensor.numel() > 0 and key in seen:
            entries.append({"name": name, "alias_of": seen[key]})
            continue
        seen[key] = name
        enc = encode(name, tensor, rules)
        entry = {"name": name, "scheme": enc.scheme, "dtype": str(enc.dtype).removeprefix("torch."),
                 "shape": list(enc.shape)}
        if enc.scale is not None:
            place(entry, "", "levels", _as_bytes(enc.data))
            place(entry, "scale_", "scales", _as_bytes(enc.scale))
        else:
            place(entry, "", "floats", _as_bytes(enc.data))
        entries.append(entry)

    starts, total = {}, 0
    for group in GROUP_ORDER:
        starts[group], total = total, total + sizes[group]
    for entry, prefix, group in placed:
        entry[f"{prefix}offset"] += starts[group]
    return entries, b"".join(b for g in GROUP_ORDER for b in groups[g])


def save_artifact(state_dict: Mapping[str, Tensor], path: str | Path, scheme: str = "int6_zstd",
                  embed: str = "fp16", embed_names: tuple[str, ...] = EMBED_NAMES,
                  rules: ExportRules | None = None, write_manifest: bool = True) -> ArtifactInfo:
    """Quantize `state_dict` and write it to `path` (plus `<path>.manifest.json`, a readable copy of the
    manifest, unless `write_manifest` is false).

    `scheme` is `int6_zstd` or `int8_zlib`; `embed` (`fp16`, `int8`, `int6`) is how the tensors named in
    `embed_names` are stored. Pass `rules` instead to also change the control-tensor patterns, the
    passthrough size or the clip candidates (then `scheme`, `embed` and `embed_names` are ignored).
    """
    start = time.perf_counter()
    rules = rules or ExportRules(scheme=scheme, embed=embed, embed_names=tuple(embed_names))
    export_scheme = get_scheme(rules.scheme)
    entries, data = _encode_all(state_dict, rules)
    manifest = {"format_version": FORMAT_VERSION, "scheme": rules.scheme, "embed": rules.embed,
                "tensors": entries}
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
    body = struct.pack("<I", len(manifest_bytes)) + manifest_bytes + data
    payload = _compress(body, export_scheme.codec, export_scheme.level)
    header = HEADER.pack(MAGIC, FORMAT_VERSION, CODECS[export_scheme.codec], 0, len(body), len(payload),
                         zlib.crc32(payload))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + payload)
    if write_manifest:
        manifest_path(path).write_text(json.dumps(manifest, indent=1) + "\n")
    counts: dict[str, int] = {}
    for entry in entries:
        kind = entry.get("scheme", "alias")
        counts[kind] = counts.get(kind, 0) + 1
    return ArtifactInfo(path=path, scheme=rules.scheme, embed=rules.embed, artifact_bytes=len(header) + len(payload),
                        payload_bytes=len(body), tensor_counts=counts,
                        compress_seconds=time.perf_counter() - start, manifest=manifest)


def _read_body(path: Path) -> bytes:
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(path, "no such artifact file") from None
    if len(blob) < HEADER.size:
        if MAGIC.startswith(blob[:len(MAGIC)]) and blob:
            raise ArtifactError(path, f"truncated: {len(blob)} bytes, shorter than the {HEADER.size}-byte header")
        raise ArtifactError(path, "not a model artifact (bad magic bytes)")
    magic, version, codec_id, _flags, body_len, payload_len, crc = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ArtifactError(path, "not a model artifact (bad magic bytes)")
    if version != FORMAT_VERSION:
        raise ArtifactError(path, f"artifact format version {version}, but this reader reads version {FORMAT_VERSION}")
    if codec_id not in CODEC_NAMES:
        raise ArtifactError(path, f"corrupted header: unknown codec id {codec_id}")
    expected = HEADER.size + payload_len
    if len(blob) < expected:
        raise ArtifactError(path, f"truncated: {len(blob)} bytes, the header announces {expected}")
    if len(blob) > expected:
        raise ArtifactError(path, f"corrupted: {len(blob) - expected} unexpected bytes after the payload")
    payload = blob[HEADER.size:]
    if zlib.crc32(payload) != crc:
        raise ArtifactError(path, "corrupted: payload checksum mismatch")
    try:
        body = _decompress(payload, CODEC_NAMES[codec_id], body_len)
    except (zstandard.ZstdError, zlib.error) as e:
        raise ArtifactError(path, f"corrupted: cannot decompress the payload ({e})") from None
    if len(body) != body_len:
        raise ArtifactError(path, f"corrupted: body is {len(body)} bytes, the header announces {body_len}")
    return body


def _parse_manifest(path: Path, body: bytes) -> tuple[dict, int]:
    if len(body) < 4:
        raise ArtifactError(path, "corrupted: body too short for a manifest")
    (length,) = struct.unpack_from("<I", body)
    if 4 + length > len(body):
        raise ArtifactError(path, "corrupted: manifest length exceeds the body")
    try:
        manifest = json.loads(body[4:4 + length].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(path, f"corrupted manifest: {e}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tensors"), list):
        raise ArtifactError(path, "corrupted manifest: no tensor list")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(path, f"manifest format version {manifest.get('format_version')!r}, but this reader "
                                  f"reads version {FORMAT_VERSION}")
    return manifest, 4 + length


def read_manifest(path: str | Path) -> dict:
    """The manifest stored inside the artifact at `path` (the file is fully checked)."""
    path = Path(path)
    return _parse_manifest(path, _read_body(path))[0]


def _dtype(path: Path, name: str, spelled: object) -> torch.dtype:
    dtype = getattr(torch, spelled, None) if isinstance(spelled, str) else None
    if not isinstance(dtype, torch.dtype):
        raise ArtifactError(path, f"manifest entry {name!r}: unknown dtype {spelled!r}")
    return dtype


def _slice(path: Path, name: str, data: memoryview, offset: object, nbytes: object, dtype: torch.dtype,
           count: int) -> Tensor:
    itemsize = torch.empty((), dtype=dtype).element_size()
    if not (isinstance(offset, int) and isinstance(nbytes, int)) or offset < 0 or nbytes != count * itemsize \
            or offset + nbytes > len(data):
        raise ArtifactError(path, f"manifest entry {name!r}: byte range does not match its shape or the file")
    if count == 0:
        return torch.empty(0, dtype=dtype)
    return torch.frombuffer(data, dtype=dtype, count=count, offset=offset).clone()


def _decode_entry(path: Path, entry: dict, data: memoryview) -> Tensor:
    name = entry.get("name")
    scheme = entry.get("scheme")
    if scheme not in TENSOR_SCHEMES:
        raise ArtifactError(path, f"manifest entry {name!r}: unknown tensor scheme {scheme!r}")
    dtype = _dtype(path, name, entry.get("dtype"))
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ArtifactError(path, f"manifest entry {name!r}: bad shape {shape!r}")
    shape = tuple(shape)
    numel = 1
    for d in shape:
        numel *= d
    if scheme == "raw":
        values = _slice(path, name, data, entry.get("offset"), entry.get("nbytes"), dtype, numel)
        return decode(EncodedTensor(scheme, dtype, shape, values))
    if scheme == "fp16":
        values = _slice(path, name, data, entry.get("offset"), entry.get("nbytes"), torch.float16, numel)
        return decode(EncodedTensor(scheme, dtype, shape, values))
    rows = shape[0] if len(shape) >= 2 else 1
    cols = numel // rows if rows else 0
    levels = _slice(path, name, data, entry.get("offset"), entry.get("nbytes"), torch.int8, numel)
    scale = _slice(path, name, data, entry.get("scale_offset"), entry.get("scale_nbytes"), torch.float16, rows)
    fmt = ROW_FORMATS[scheme]
    if numel and (int(levels.min()) < fmt.qmin or int(levels.max()) > fmt.qmax):
        raise ArtifactError(path, f"manifest entry {name!r}: levels outside [{fmt.qmin}, {fmt.qmax}]")
    return decode(EncodedTensor(scheme, dtype, shape, levels.reshape(rows, cols), scale))


def load_artifact(path: str | Path) -> dict[str, Tensor]:
    """Read an artifact back into a state dict (original names, order, dtypes and shapes; quantized
    tensors dequantized) that `load_state_dict(strict=True)` accepts."""
    path = Path(path)
    body = _read_body(path)
    manifest, data_start = _parse_manifest(path, body)
    data = memoryview(bytearray(body[data_start:]))
    out: dict[str, Tensor] = {}
    for entry in manifest["tensors"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ArtifactError(path, "corrupted manifest: a tensor entry has no name")
        if "alias_of" in entry:
            if entry["alias_of"] not in out:
                raise ArtifactError(path, f"manifest entry {entry['name']!r}: alias of unknown tensor "
                                          f"{entry['alias_of']!r}")
            out[entry["name"]] = out[entry["alias_of"]]
            continue
        out[entry["name"]] = _decode_entry(path, entry, data)
    return out
