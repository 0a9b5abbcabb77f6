"""sims.netlab on a real network of namespaces: a partition shows and loses
nothing, the lab is taken down however a run ends, and a key the final reads
could not read is reported, not taken for absent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sims import netlab
from sims.checker import Op

ROOT = Path(__file__).resolve().parents[2]
WHY = netlab.missing(None)
needs_lab = pytest.mark.skipif(WHY is not None, reason=f"sims.netlab {WHY}")


def _mine(prefix: str) -> list[str]:
    return [ns for ns in netlab.namespaces() if ns.startswith(prefix)]


def _timeline(lines: list[str]) -> dict[int, list[str]]:
    """Second -> the fields of its line ("n1", "S", "n2", ...)."""
    out = {}
    for line in lines:
        head, _, rest = line.partition("s ")
        if head.strip().isdigit():
            out[int(head)] = rest.split()
    return out


@needs_lab
def test_halves_cuts_the_minority_off_and_loses_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    plan = netlab.Plan(scenario="halves", nodes=3, seed=1, duration=30)
    result = netlab.run(plan, workdir=tmp_path, out=lines.append)
    report = "\n".join(lines)
    v = result.verdict
    # No acknowledged write lost, no deleted key back, no stale read (the
    # minority once elected a coordinator whose ring won after the heal:
    # python -m sims.netlab halves --nodes 5 --seed 13).
    assert not v.lost, report
    assert not v.stale_reads, report
    assert not v.phantoms, report
    assert not v.unread, report
    # The cut showed: the minority (n1) said it was halted, its clients got
    # refusals or no answer, and it stopped answering long before the heal.
    timeline = _timeline(lines)
    assert all(timeline[s][:2] == ["n1", "S"] for s in range(1, 5)), report
    assert any(timeline[s][:2] == ["n1", "H"] for s in range(7, 15)), report
    minority = result.during["minority"]
    assert minority.get("fail", 0) + minority.get("unknown", 0) > 0, report
    assert result.stopped is not None
    assert result.stopped < 3.0, report
    # And the majority wrote the minority's slots again, after a failover.
    assert result.resumed is not None, report
    assert _mine(f"kc{os.getpid()}r0-") == []


@needs_lab
def test_a_run_that_raises_leaves_no_namespace_nor_process(tmp_path: Path) -> None:
    runs: list[netlab.Run] = []

    def boom(r: netlab.Run) -> None:
        runs.append(r)
        assert _mine(r.lab.prefix), "the lab is up as the fault begins"
        raise RuntimeError("boom")

    plan = netlab.Plan(scenario="pause", nodes=3, duration=30)
    with pytest.raises(RuntimeError, match="boom"):
        netlab.run(plan, workdir=tmp_path, on_fault=boom, out=print)
    (r,) = runs
    assert _mine(r.lab.prefix) == []
    assert all(p.poll() is not None for p in r.procs)
    assert (r.dir / "history.jsonl").exists(), "a run that fails keeps its history"


@needs_lab
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_run_stopped_by_a_signal_takes_its_lab_down(sig: signal.Signals, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "sims.netlab", "halves", "--nodes", "3", "--dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    prefix = f"kc{proc.pid}r0-"
    nodes = [f"{prefix}n{i}" for i in (1, 2, 3)]
    try:
        # Stopped once the lab is up and a node runs in each namespace.
        deadline = time.monotonic() + 30
        while not all(netlab.sh("ip", "netns", "pids", ns, check=False) for ns in nodes):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "the lab did not come up"
            time.sleep(0.1)
        proc.send_signal(sig)
        output = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, output
    assert "stopped; the lab is down" in output
    assert _mine(prefix) == []


def test_without_root_it_says_so_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netlab.main(["halves"]) == 2
    assert "needs root" in capsys.readouterr().err


def test_a_key_some_copy_of_which_was_not_read_is_unread_not_lost() -> None:
    ops = [
        Op("n1.w", "write", b"key:1", b"n1:1", 1.0, 1.1, "ok"),
        Op("n1.w", "write", b"key:2", b"n1:2", 1.2, 1.3, "ok"),
    ]
    final = {
        "views": {"copy 1": {"key:2": "n1:2"}, "copy 2": {"key:1": "n1:1", "key:2": "n1:2"}},
        "unread": ["key:1"],  # copy 1's read of key:1 timed out
    }
    v = netlab.verdict_of(ops, final, {"n1.w": "all"}, (0.0, 2.0))
    assert v.unread == [b"key:1"]
    assert not v.lost
    assert not v.diverged
    v = netlab.verdict_of(ops, {**final, "views": {"copy 1": {}}, "unread": []}, {}, (0.0, 2.0))
    assert len(v.lost) == 2, "read back as absent, both writes are lost"


class FakeRun:
    """What a scenario asks of a run, recorded (no lab: runs anywhere)."""

    def __init__(self, names: list[str]) -> None:
        self._names = names
        self.rng = __import__("random").Random(1)
        self.cuts: list[tuple[list[str], list[str]]] = []
        self.signals: list[tuple[str, signal.Signals]] = []

    def names(self) -> list[str]:
        return self._names

    def cutting(self, a: list[str], b: list[str], *, both: bool = True) -> object:
        return lambda: self.cuts.append((a, b))

    def heal(self) -> None:
        self.cuts.clear()

    def signal_node(self, name: str, sig: signal.Signals) -> None:
        self.signals.append((name, sig))


def test_bridge_cuts_the_sides_and_leaves_the_middle_node_alone() -> None:
    run = FakeRun(["n1", "n2", "n3", "n4", "n5"])
    fault = netlab.bridge(run)  # type: ignore[arg-type]
    fault.begin()
    assert run.cuts == [(["n1", "n2"], ["n4", "n5"])]
    assert not fault.isolating
    fault.end()
    assert run.cuts == []


def test_a_slow_node_is_stopped_and_continued_until_the_fault_ends() -> None:
    run = FakeRun(["n1", "n2", "n3"])
    fault = netlab.slow_node(run)  # type: ignore[arg-type]
    (victim,) = fault.cut
    fault.begin()
    deadline = time.monotonic() + 10
    # End it while the victim is stopped: it must be left running.
    while time.monotonic() < deadline and not (
        len(run.signals) >= 3 and run.signals[-1][1] == signal.SIGSTOP
    ):
        time.sleep(0.01)
    fault.end()
    assert {name for name, _ in run.signals} == {victim}
    stops = [s for _, s in run.signals]
    assert stops.count(signal.SIGSTOP) >= 2
    assert stops[-1] == signal.SIGCONT  # it ends running
