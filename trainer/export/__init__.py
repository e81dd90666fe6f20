"""Model export: int6 per-row + zstd-22 artifact (or the int8 + zlib-9 baseline), size accounting and
the round-trip evaluation of the dequantized model."""
