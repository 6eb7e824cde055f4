"""A benchmark command at toy size (``python -m benchmarks.<name> --toy``) in a subprocess, as
its make target runs it, with its results and BENCHMARKS.md in a test's temporary folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def toy_run(module: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m <module> --toy`` on one thread, its results in ``tmp_path/results`` and its
    report ``tmp_path/BENCHMARKS.md``: the finished process, its output captured."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            module,
            "--toy",
            "--threads",
            "1",
            "--results",
            str(tmp_path / "results"),
            "--out",
            str(tmp_path / "BENCHMARKS.md"),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def toy(module: str, tmp_path: Path, *args: str) -> str:
    """:func:`toy_run`'s stdout; a non-zero exit fails the test with its stderr."""
    done = toy_run(module, tmp_path, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def published(tmp_path: Path, *args: str) -> str:
    """:func:`toy` of ``benchmarks.published``, its state in ``tmp_path/state``."""
    return toy("benchmarks.published", tmp_path, "--state", str(tmp_path / "state"), *args)
