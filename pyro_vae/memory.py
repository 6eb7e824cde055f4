"""How much memory this process can still take, read from the kernel (no torch): the bound that
data sets, models and estimator steps are checked against before anything large is allocated."""

from __future__ import annotations

import os
from pathlib import Path


def available_memory() -> int | None:
    """Bytes of memory this process can still take: the kernel's MemAvailable, capped by a
    cgroup v2 limit (a container's) when there is one; None where neither can be read."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
        limit = Path("/sys/fs/cgroup/memory.max")
        if limit.is_file() and limit.read_text().strip() != "max":
            used = Path("/sys/fs/cgroup/memory.current")
            found.append(int(limit.read_text()) - int(used.read_text()))
    except (OSError, ValueError):
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return min(found) if found else None
