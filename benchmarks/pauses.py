"""Wall time with the process's pauses left out, for the time a long training job reports.

A job paused by ``kill -STOP`` (to free the cores for an hour) and resumed by ``kill -CONT``
would otherwise count the pause in the epoch it fell in. A ticker thread reads the clock
every ``tick`` seconds; all of a process's threads stop together, so a gap longer than ``gap``
seconds between two consecutive reads (the ticker's or a caller's) is a pause, and left out:

    running(t) = t − Σ { t_{i+1} − t_i : t_{i+1} − t_i > gap }

over the consecutive reads t_i ≤ t. A pause shorter than ``gap`` counts as running, and each
pause counted leaves in at most ``tick`` seconds of the running time around it; ``gap`` is
many ticks so that a ticker slowed by load is not taken for a pause.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RunningClock:
    """Seconds of wall time the process ran: ``running()`` as the module's formula gives it,
    from ``now`` (``time.perf_counter``). ``start()`` starts the ticker (a daemon thread)."""

    def __init__(
        self,
        now: Callable[[], float] = time.perf_counter,
        tick: float = 1.0,
        gap: float = 15.0,
    ) -> None:
        if not 0 < tick < gap:
            raise ValueError(f"RunningClock: need 0 < tick < gap, got tick {tick}, gap {gap}")
        self.now, self.tick, self.gap = now, tick, gap
        self._paused = 0.0
        self._last = now()
        self._lock = threading.Lock()

    @property
    def paused(self) -> float:
        """Seconds left out so far."""
        with self._lock:
            return self._paused

    def running(self) -> float:
        """The running time now; a read, like the ticker's, that closes any pause before it."""
        with self._lock:
            t = self.now()
            if t - self._last > self.gap:
                self._paused += t - self._last
            self._last = t
            return t - self._paused

    def start(self) -> RunningClock:
        """Start the ticker; the clock, to chain."""
        threading.Thread(target=self._ticker, name="running-clock", daemon=True).start()
        return self

    def _ticker(self) -> None:
        while True:
            time.sleep(self.tick)
            self.running()
