"""Where pyro-vae keeps what it can make again: downloaded data sets, crash logs, the state of
long benchmark jobs. One folder, ``$XDG_CACHE_HOME/pyro-vae`` (``~/.cache/pyro-vae`` when the
variable is unset or empty, as the XDG base-directory specification says)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """pyro-vae's cache folder, read from the environment at each call (not created here)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pyro-vae"
