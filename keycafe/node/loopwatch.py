"""How long the event loop is held: the longest task step, and how many were long.

A node answers gossip probes, client requests and stream frames on one trio
loop, so a step that computes for 100 ms delays every one of them by as much,
and a probe answered late makes the prober suspect a live member. ``LoopWatch``
is a trio instrument that times every task step (up to ``after_task_step``)
and keeps the longest, when it ended and which task took it, the longest of
the last few seconds (so that a sim can tell which ring change held the loop)
and how many steps took over 20 ms. It runs on every step, so it does one
clock read and a few comparisons there, and its slow path only when a step
sets a record or a second goes by. Even so it costs: redis-benchmark -t
set,get against one node took 31.5 us of node CPU per request with it and
28.5 without at -c 50, 79.5 and 73.5 at -c 1 (medians of 3, load ~2.5),
mostly trio's call of the hook.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import attrs
import trio

# A step over this is counted as long: at 20 ms a LAN probe (timeout 500 ms,
# memberlist's LAN profile) still has room for the 20 steps queued ahead of it.
LONG_STEP: Final = 0.020


@attrs.define(eq=False)
class LoopWatch(trio.abc.Instrument):
    """Times every task step of the trio run it is added to."""

    # The recent longest step covers this many seconds, in 1 s buckets.
    window: int = 10
    longest: float = 0.0  # seconds
    longest_task: str = ""
    longest_at: float = 0.0  # wall-clock time (time.time()) it ended
    long_steps: int = 0  # steps over LONG_STEP
    _started: float = 0.0
    _bucket_end: float = 0.0
    _bucket_max: float = 0.0
    # (end of a 1 s bucket on perf_counter's clock, the longest step in it)
    _buckets: deque[tuple[float, float]] = attrs.Factory(deque)

    # A step is timed from the end of the one before it, or from the loop's
    # waking up from its I/O wait, rather than from before_task_step: trio's
    # dispatch of a per-step hook costs ~0.6 us here, twice what this code
    # does, and the gap between two steps is the scheduler's few microseconds.

    def after_io_wait(self, timeout: float) -> None:
        self._started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        now = time.perf_counter()
        took = now - self._started
        self._started = now
        if now >= self._bucket_end:
            self._roll(now)
        if took > self._bucket_max:
            self._bucket_max = took
            if took > self.longest:
                self.longest, self.longest_task, self.longest_at = took, task.name, time.time()
        if took > LONG_STEP:
            self.long_steps += 1

    def _roll(self, now: float) -> None:
        if self._bucket_max:
            self._buckets.append((self._bucket_end, self._bucket_max))
        while self._buckets and self._buckets[0][0] <= now - self.window:
            self._buckets.popleft()
        self._bucket_end, self._bucket_max = now + 1.0, 0.0

    def recent_longest(self) -> float:
        """The longest step that ended in about the last ``window`` seconds."""
        horizon = time.perf_counter() - self.window
        return max(
            [self._bucket_max if self._bucket_end > horizon else 0.0]
            + [m for end, m in self._buckets if end > horizon]
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Watch the current trio run until cancelled."""
        with watching_loop(self):
            task_status.started()
            await trio.sleep_forever()


@contextmanager
def watching_loop(watch: LoopWatch | None = None) -> Iterator[LoopWatch]:
    """Watch the current trio run's steps while the block runs."""
    watch = watch or LoopWatch()
    # The step running now started before the watch saw it: time it from here.
    watch._started = time.perf_counter()
    trio.lowlevel.add_instrument(watch)
    try:
        yield watch
    finally:
        trio.lowlevel.remove_instrument(watch)


def loop_figures(watch: LoopWatch) -> dict[str, int | str]:
    """The watch's figures for CLUSTER INFO (``keycafe_`` is prefixed there)."""
    return {
        "loop_longest_step_ms": round(watch.longest * 1000),
        "loop_longest_step_task": "".join(watch.longest_task.split()) or "-",
        "loop_longest_step_at": round(watch.longest_at),
        "loop_recent_longest_step_ms": round(watch.recent_longest() * 1000),
        "loop_steps_over_20ms": watch.long_steps,
    }
