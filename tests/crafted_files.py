"""Files crafted to mislead their reader: a PNG whose header claims a size its pixels lack."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def claim_size(png: Path, width: int, height: int) -> None:
    """Rewrite the IHDR chunk of ``png`` (bytes 16-28 after the signature, length and type) to
    claim ``width`` × ``height``, its CRC (bytes 29-32, over type and data) recomputed: a header
    of any size in front of a few bytes of pixels."""
    raw = bytearray(png.read_bytes())
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    png.write_bytes(bytes(raw))
