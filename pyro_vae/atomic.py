"""Writing a file so that a reader, a crash, Ctrl-C or a full disk finds the old content or the
new one, never a mix: write a temporary file beside the target, fsync it, ``os.replace`` it over
the target (a rename within one file system is atomic), fsync the directory.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

TEMPORARY = ".*.tmp"  # glob of what an interrupted write leaves: see remove_partial_files


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(f)`` into a temporary sibling of ``path``, then rename it over ``path``.

    On any failure the temporary file is removed and ``path`` is as it was; an ``OSError``
    without a file name (``ENOSPC`` from a write or fsync), or naming the temporary file (which
    could not be created), gets ``path`` as its file name.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # a read-only directory: name the file, not the temporary one
        exc.filename = str(path)
        raise
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(path)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json_text(value))


def json_text(value: Any) -> str:
    """``value`` as strict JSON (indented): a NaN or ±inf float, which Python would write as a
    bare ``NaN`` that other JSON readers refuse, becomes ``null`` (the standard error of one
    point, the log p̂ of a point whose weights all vanished)."""
    return json.dumps(_finite(value), indent=2, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def remove_partial_files(directory: Path) -> None:
    """The temporary files a crash left in the middle of :func:`write_atomic`."""
    for path in directory.glob(TEMPORARY):
        path.unlink(missing_ok=True)
