"""Helpers that start and signal pyro-vae processes: the console script run to completion
(:func:`console`, its one line of error checked by :func:`one_line`), started as a terminal's
foreground command (:func:`foreground`, :func:`ctrl_c_after_first_line`) or held still inside a
training step by tests/holder.py (:func:`held`), and waits for what such a process makes
(:func:`wait_until`).

No helper here races the scheduler: a signal meets a run held still at a known step or comes
after a line the process wrote, and every wait is for an event the process makes (a file, a line,
its exit), guarded only against a hang (:data:`WAIT`). They serve the signal and timing tests
(``pytest -m timing``, which CI also runs beside two busy processes) and the command-line tests.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pyro_vae.cli import EXIT_USER_ERROR

EXE = str(Path(sys.executable).with_name("pyro-vae"))
HOLDER = Path(__file__).with_name("holder.py")
HELD_STEP = 3  # holder.py's "training" phase: held inside step 4, 3 steps done

# The one time limit of these tests, a guard against a hang and never a bet on a speed: a run
# that takes seconds on a quiet machine takes minutes to start on a busy one (load 6-7 on 2 cores).
WAIT = 600

# A shell without job control (a script's `make test &`, nohup, some CI runners) starts its
# background commands with SIGINT ignored, and exec passes that on: Python then leaves SIGINT
# ignored (no KeyboardInterrupt), so a command under test would go on after its Ctrl-C. A
# terminal starts its foreground command with SIGINT at the default; ``foreground`` does too.
FOREGROUND = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def console(
    argv: list[str], cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``pyro-vae ARGV`` in ``cwd``; its cache (crash logs) beside ``cwd``, not in it."""
    env = {**os.environ, "XDG_CACHE_HOME": str(cwd.parent / "cache"), **(env or {})}
    return subprocess.run(
        [EXE, *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


def one_line(proc: subprocess.CompletedProcess[str], code: int = EXIT_USER_ERROR) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def foreground(argv: list[str], **kw) -> subprocess.Popen:
    """``subprocess.Popen(argv, **kw)`` (``argv[0]`` a path) with SIGINT at its default, as in a
    terminal's foreground command, whatever pytest inherited; the pid is the command's."""
    return subprocess.Popen([sys.executable, "-c", FOREGROUND, *argv], **kw)


def wait_until(done: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    """Wait for ``done()``, an event ``proc`` makes (a file, a logged step): a wait, not a timing
    assertion. Fails with the process's output if it ends first, or after :data:`WAIT` s."""
    deadline = time.monotonic() + WAIT
    while not done():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate()
            raise AssertionError(f"never {what}: exit {proc.returncode}, output {out}")
        time.sleep(0.05)


def ctrl_c_after_first_line(argv: list[str], **kw) -> tuple[str, int, str, str]:
    """``argv`` in the foreground: its first stderr line (it must come, however long the process
    takes to start), then a Ctrl-C; the exit status, stdout and the rest of stderr once it has
    ended. Past :data:`WAIT` s at either wait (a hang) the test fails, showing what came."""
    proc = foreground(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    try:
        first, deadline = b"", time.monotonic() + WAIT
        while not first.endswith(b"\n"):  # a byte at a time: the rest is left to communicate()
            wait = max(0.0, deadline - time.monotonic())
            byte = (
                os.read(proc.stderr.fileno(), 1)
                if select.select([proc.stderr], [], [], wait)[0]
                else b""
            )
            if not byte:  # the end of stderr (the process ended), or the deadline
                break
            first += byte
        line = first.decode()
        assert line.endswith("\n"), f"no line on stderr in {WAIT} s: {line!r}, exit {proc.poll()}"
        proc.send_signal(signal.SIGINT)
        try:
            out, rest = proc.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, rest = proc.communicate()
            raise AssertionError(
                f"no exit in {WAIT} s after Ctrl-C; after {line!r} it wrote {out!r}, {rest!r}"
            ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return line, proc.returncode, out.decode(), rest.decode()


def held(signals: Path, argv: list[str], **kw) -> subprocess.Popen:
    """``pyro-vae ARGV[1:]`` (``argv[0]`` the console script) run by tests/holder.py in the
    foreground, held still inside step 4 until a line or the end of its stdin: it creates
    ``signals/training`` when it gets there."""
    signals.mkdir()
    return foreground(
        [sys.executable, str(HOLDER), str(signals), "training", *argv[1:]],
        stdin=subprocess.PIPE,
        text=True,
        **kw,
    )
