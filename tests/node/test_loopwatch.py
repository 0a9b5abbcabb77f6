"""The loop watch: the longest task step, the long ones, and the node's figures."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import cast

import pytest
import trio

from keycafe.node import loopwatch
from keycafe.node.loopwatch import LoopWatch, loop_figures, watching_loop
from tests.conftest import node_process
from tests.node.helpers import info


def test_a_task_that_blocks_the_loop_is_reported() -> None:
    async def hog() -> None:
        await trio.lowlevel.checkpoint()
        time.sleep(0.05)  # noqa: ASYNC251 - holding the loop is what is measured

    async def chatter() -> None:
        for _ in range(100):
            await trio.lowlevel.checkpoint()

    async def main() -> LoopWatch:
        with watching_loop() as watch:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(chatter)
                nursery.start_soon(hog)
        return watch

    before = time.time()
    watch = trio.run(main)
    assert 0.045 <= watch.longest < 1.0
    assert watch.longest_task.endswith("hog")
    assert before <= watch.longest_at <= time.time()
    assert watch.long_steps >= 1
    assert watch.recent_longest() == watch.longest
    figures = loop_figures(watch)
    assert figures["loop_longest_step_ms"] == round(watch.longest * 1000) >= 45
    assert figures["loop_steps_over_20ms"] == watch.long_steps
    assert str(figures["loop_longest_step_task"]).endswith("hog")


def test_the_recent_longest_step_forgets_steps_older_than_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(loopwatch.time, "perf_counter", lambda: now[0])
    watch = LoopWatch(window=10)
    task = cast(trio.lowlevel.Task, SimpleNamespace(name="t"))

    def step(at: float, took: float) -> None:
        now[0] = at
        watch.after_io_wait(0)
        now[0] = at + took
        watch.after_task_step(task)

    step(100.0, 0.080)
    step(103.0, 0.030)
    step(105.0, 0.001)
    assert watch.recent_longest() == pytest.approx(0.080)
    now[0] = 112.0  # the 80 ms step is 12 s old, the 30 ms one 9 s
    assert watch.recent_longest() == pytest.approx(0.030)
    step(120.0, 0.001)
    assert watch.recent_longest() == pytest.approx(0.001)
    assert watch.longest == pytest.approx(0.080)
    assert watch.long_steps == 2


def test_a_node_reports_its_loop_in_cluster_info() -> None:
    with node_process("--gossip-profile", "local") as node:
        figures = info(node)
    assert int(figures["keycafe_loop_longest_step_ms"]) >= 0
    assert int(figures["keycafe_loop_steps_over_20ms"]) >= 0
    assert int(figures["keycafe_loop_recent_longest_step_ms"]) >= 0
    assert figures["keycafe_loop_longest_step_task"]
