"""benchmarks.pauses: the running time a training job reports leaves out its pauses (a gap
between consecutive reads longer than ``gap``), and only those; its ticker closes a pause
without any read from the caller."""

import threading

import pytest

from benchmarks.pauses import RunningClock


class FakeTime:
    """A settable clock; ``seen`` is set once the ticker thread has read a time ≥ ``watch``."""

    def __init__(self, watch: float = float("inf")) -> None:
        self.t, self.watch, self.seen = 0.0, watch, threading.Event()

    def __call__(self) -> float:
        if threading.current_thread().name == "running-clock" and self.t >= self.watch:
            self.seen.set()
        return self.t


def test_a_gap_longer_than_gap_seconds_is_left_out_and_a_shorter_one_counts():
    now = FakeTime()
    clock = RunningClock(now, tick=1.0, gap=15.0)
    readings = []
    for t in (1.0, 2.0, 102.0, 103.0, 117.9, 150.0):
        now.t = t
        readings.append(clock.running())
    # 2 → 102 is a pause (100 s left out); 103 → 117.9 (14.9 s) is not; 117.9 → 150 (32.1 s) is
    assert readings == pytest.approx([1.0, 2.0, 2.0, 3.0, 17.9, 17.9])
    assert clock.paused == pytest.approx(132.1)


def test_the_ticker_closes_a_pause_with_no_read_from_the_caller():
    now = FakeTime(watch=100.0)
    clock = RunningClock(now, tick=0.001, gap=15.0).start()
    now.t = 100.0  # the process "resumes" 100 s later; only the ticker reads
    assert now.seen.wait(timeout=60), "the ticker never read the clock"
    assert clock.paused == 100.0  # the ticker's read, under the lock, is complete
    now.t = 101.0
    assert clock.running() == pytest.approx(1.0)


@pytest.mark.parametrize(("tick", "gap"), [(0.0, 15.0), (15.0, 15.0), (-1.0, 5.0)])
def test_a_tick_not_shorter_than_the_gap_is_refused(tick, gap):
    with pytest.raises(ValueError, match="need 0 < tick < gap"):
        RunningClock(tick=tick, gap=gap)
