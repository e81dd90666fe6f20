"""Export schemes: how the weight matrices are quantized and how the artifact is compressed.

`int6_zstd` is the parameter-golf record recipe (int6 per row, clip searched per row, zstd level 22);
`int8_zlib` is the parameter-golf baseline (int8 per row, clip at the 99.99984th percentile of |w|,
zlib level 9), kept for comparison. `export.embed` chooses the storage of the embedding / LM head
tensor independently of the scheme.
"""
from __future__ import annotations

from dataclasses import dataclass

from trainer.config import ConfigError


@dataclass(frozen=True)
class RowFormat:
    """Signed integer levels [qmin, qmax] held in int8, one fp16 scale per row: value = q * scale."""

    name: str
    qmin: int
    qmax: int


INT6 = RowFormat("int6_row", -32, 31)
INT8 = RowFormat("int8_row", -127, 127)
ROW_FORMATS = {f.name: f for f in (INT6, INT8)}


@dataclass(frozen=True)
class ExportScheme:
    name: str
    matrix_format: RowFormat
    clip: str        # "search": per-row clip minimising reconstruction error; "percentile": fixed quantile
    codec: str       # "zstd" | "zlib"
    level: int

    @property
    def label(self) -> str:
        """The reference log spelling, e.g. `int6+zstd`."""
        return f"{self.matrix_format.name.split('_')[0]}+{self.codec}"

    @property
    def eval_label(self) -> str:
        """The label of the artifact's round-trip evaluation in the log, e.g. `final_int6_zstd_roundtrip`."""
        return f"final_{self.name}_roundtrip"


SCHEMES = {
    "int6_zstd": ExportScheme("int6_zstd", INT6, clip="search", codec="zstd", level=22),
    "int8_zlib": ExportScheme("int8_zlib", INT8, clip="percentile", codec="zlib", level=9),
}
EMBED_FORMATS = {"fp16": None, "int8": INT8, "int6": INT6}


def get_scheme(name: str) -> ExportScheme:
    if name not in SCHEMES:
        raise ConfigError("export.scheme", f"must be one of {', '.join(SCHEMES)}, got {name!r}")
    return SCHEMES[name]


def check_embed(embed: str) -> None:
    if embed not in EMBED_FORMATS:
        raise ConfigError("export.embed", f"must be one of {', '.join(EMBED_FORMATS)}, got {embed!r}")
