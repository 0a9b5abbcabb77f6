"""Partition scenarios on a real network of namespaces, judged by the checker.

    python -m sims.netlab SCENARIO [--nodes 5] [--seed S] [--duration 60] [--runs N]
                          [--profile local|lan] [--timeout 2] [--skew 300]
                          [--keep] [--json FILE] [--dir /tmp/netlab]
    python -m sims.netlab --cleanup      (namespaces left by runs killed with -9)

Needs root, ``ip`` (iproute2) and ``nft`` (nftables), and for ``clock-skew``
libfaketime (Debian's ``faketime``); without them it exits 2 saying so.

The lab: a network namespace per node and one for a bridge, each node's veth
on the bridge, addresses from a private /24 (``10.77.X.0/24``), every name
prefixed ``kc<pid>r<run>-``; the root namespace is not touched. Each node is
a real ``python -m keycafe`` in its namespace (two copies of each slot), and
each namespace also runs a writer and a reader (``sims.netlab_client work``,
``sims.partition``'s workload) that start from their own node, so a client
on one side of a cut reaches only that side. A monitor in the bridge's
namespace, which the faults never touch, reads every node's ``CLUSTER
INFO`` twice a second.

Faults (``SCENARIOS``) start 5 s into the workload and end 15 s before its
end, as in ``sims.partition``. They are nftables rules on the bridge's
``forward`` hook (silent drops, as a cut cable), SIGSTOP/SIGCONT, or a
libfaketime clock:

- ``halves``: the first ``(n - 1) // 2`` nodes cut off from the rest;
- ``isolate-primary``: the primary of the most keys written so far cut off;
- ``one-way``: the coordinator hears nothing from the rest, while what it
  sends still reaches them;
- ``pause``: a node picked by the seed stopped (SIGSTOP) throughout;
- ``clock-skew``: every node runs under libfaketime; the primary of the most
  keys written so far steps ``--skew`` seconds ahead (300 s: as far as the
  hybrid clock tolerates, keycafe/store/hlc.py), and back when the fault ends;
- ``lossy``: a fifth of the packets between nodes dropped at random;
- ``bridge``: two sides that cannot reach each other, and the middle node
  (by name), which reaches both;
- ``slow-node``: a node picked by the seed runs 0.1 s, then is stopped for
  0.1-1 s, again and again (an overloaded host).

After the workload the cluster settles, then every key is read from each of
its copies (``READONLY`` and ``GET`` on the owner itself); copies that
differ are read again until they agree (anti-entropy repairs within a pass)
or 30 s have gone. ``sims.checker`` judges the history against those views.

Prints a line per second: each node's state as it reports it (``S``
serving; ``F`` serving, some slots with no live copy; ``H`` halted, no
majority heard; ``-`` no answer; ``P`` paused; ``X`` exited; with
``clock-skew``, its clock's offset), the coordinator and term each node
names, ring epochs, and each side's operations ok/failed/unknown. Then the
verdict (with the first stale reads and lost writes, each against the
acknowledged write it missed), how long the other side could not write the
slots the cut-off side led (against the detection bound), and how long the
cut-off side kept answering (against its lease). Exit status 1 if a verdict
fails; a failed run keeps its history, the monitor's samples, the final
reads and the node logs in ``--dir``. ``--runs`` ends with the totals.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import glob
import json
import math
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import attrs

from keycafe.cluster.lease import HEARTBEATS_PER_LEASE, LEASE_SHARE
from keycafe.gossip.config import GossipConfig
from keycafe.gossip.suspicion import suspicion_timeout
from keycafe.store.keyslot import SLOT_COUNT
from sims.checker import Op, Verdict, check
from sims.partition import FAULTS_FROM, QUIET_TAIL

ROOT: Final = Path(__file__).resolve().parent.parent
PORT: Final = 9814  # every node's client port (each has an address of its own)
CLUSTER_PORT: Final = PORT + 10000
BRIDGE_HOST: Final = 254  # the bridge's own address in the lab's /24: the monitor's
LOSS: Final = 20  # percent of packets ``lossy`` drops
SETTLE: Final = 90.0  # seconds the cluster may take to settle, before and after
CLIENT_STARTUP: Final = 3.0  # seconds a client process may take to start (a busy box)
CONVERGE: Final = 30.0  # seconds copies that differ may take to agree: a pass and more
FAKETIME_LIBS: Final = ("/usr/lib/*/faketime/libfaketimeMT.so.1", "/usr/lib/faketime/*MT.so.1")
STALE: Final = re.compile(r"^kc(\d+)r\d+-")  # the lab's namespaces: kc<pid>r<run>-...
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

Out = Callable[[str], None]


# -- the lab -----------------------------------------------------------------------------


def sh(*args: str, check: bool = True, stdin: str | None = None) -> str:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, check=False)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def faketime_lib() -> str | None:
    return next((p for pattern in FAKETIME_LIBS for p in sorted(glob.glob(pattern))), None)


def missing(scenario: str | None) -> str | None:
    """Why this machine cannot run the lab, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and nftables)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"needs {tool!r} (Debian package {package})"
    if scenario == "clock-skew" and faketime_lib() is None:
        return "clock-skew needs libfaketime (Debian package faketime)"
    return None


@attrs.define(eq=False)
class Lab:
    """Namespaces on a bridge, and the nftables chain that makes the faults."""

    prefix: str
    size: int
    net: str  # the first three octets of the lab's /24
    made: list[str] = attrs.Factory(list)

    @property
    def switch(self) -> str:
        return f"{self.prefix}sw"

    def ns(self, i: int) -> str:
        return f"{self.prefix}n{i}"

    def host(self, i: int) -> str:
        return f"{self.net}.{i}"

    @staticmethod
    def run_in(ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def up(self) -> None:
        _labs.add(self)
        sw = self.switch
        self._add(sw)
        self._ip(
            f"-n {sw} link add br0 type bridge",
            f"-n {sw} addr add {self.host(BRIDGE_HOST)}/24 dev br0",
            f"-n {sw} link set br0 up",
            f"-n {sw} link set lo up",
        )
        for i in range(1, self.size + 1):
            ns = self.ns(i)
            self._add(ns)
            # Both ends are made where they live: nothing passes through the
            # root namespace.
            self._ip(
                f"-n {sw} link add v{i} type veth peer name eth0 netns {ns}",
                f"-n {sw} link set v{i} master br0 up",
                f"-n {ns} addr add {self.host(i)}/24 dev eth0",
                f"-n {ns} link set eth0 up",
                f"-n {ns} link set lo up",
            )
        self.nft(
            "add table bridge netlab\n"
            "add chain bridge netlab forward "
            "{ type filter hook forward priority 0; policy accept; }"
        )

    def _add(self, ns: str) -> None:
        sh("ip", "netns", "add", ns)
        self.made.append(ns)

    @staticmethod
    def _ip(*commands: str) -> None:
        for command in commands:
            sh("ip", *command.split())

    def nft(self, script: str) -> None:
        sh(*self.run_in(self.switch), "nft", "-f", "-", stdin=script + "\n")

    def rules(self, rules: list[str]) -> None:
        """The faults become ``rules``, in one transaction (none: healed)."""
        lines = ["flush chain bridge netlab forward"]
        self.nft("\n".join(lines + [f"add rule bridge netlab forward {r}" for r in rules]))

    def drop(self, src: list[int], dst: list[int]) -> str:
        """The rule that drops every packet from nodes ``src`` to nodes ``dst``."""
        a = ", ".join(self.host(i) for i in src)
        b = ", ".join(self.host(i) for i in dst)
        return f"ip saddr {{ {a} }} ip daddr {{ {b} }} drop"

    def down(self) -> list[str]:
        """Kill whatever runs in the lab's namespaces and delete them; the
        lab's names still listed afterwards (none unless something failed)."""
        for ns in self.made:
            _kill_inside(ns)
        for ns in reversed(self.made):  # a node's namespace first: its veth goes with it
            sh("ip", "netns", "del", ns, check=False)
        _labs.discard(self)
        return [ns for ns in namespaces() if ns.startswith(self.prefix)]


def _kill_inside(ns: str) -> None:
    for pid in sh("ip", "netns", "pids", ns, check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def namespaces() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()]


def cleanup_stale() -> list[str]:
    """Delete the namespaces of labs whose process is gone (killed with -9)."""
    gone = []
    for ns in namespaces():
        m = STALE.match(ns)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _kill_inside(ns)
            sh("ip", "netns", "del", ns, check=False)
            gone.append(ns)
    return gone


_labs: set[Lab] = set()  # labs up: taken down at exit, whatever happened


@atexit.register
def _teardown_all() -> None:
    for lab in list(_labs):
        lab.down()


# -- a run's processes -------------------------------------------------------------------


@attrs.define(eq=False)
class Node:
    name: str
    index: int
    host: str
    proc: subprocess.Popen[str]
    clock: Path | None  # libfaketime's offset file, when it runs under it
    paused: bool = False

    @property
    def address(self) -> str:
        return f"{self.host}:{PORT}"


@attrs.define(eq=False)
class Fault:
    """A scenario's fault, chosen as it begins: what it is, whom it cuts off."""

    what: str
    cut: frozenset[str]  # the nodes on the side cut off (the minority, the victim)
    begin: Callable[[], None]
    end: Callable[[], None]
    labels: tuple[str, str] = ("cut", "rest")  # the two sides, as the timeline names them
    isolating: bool = True  # False: the cut side still reaches the rest (a skewed clock)
    # A clock fault: the cut side's clock, as it reports it, is measured. (Its
    # estimate, from the ping and pong times it shows, lags on a node cut off.)
    clocks: bool = False


@attrs.frozen(kw_only=True)
class Plan:
    """What to run: the command line's settings."""

    scenario: str
    nodes: int = 5
    seed: int = 1  # picks victims, and the clients' keys
    duration: float = 60.0  # seconds of workload, the faults from 5 s to 15 s before its end
    profile: str = "local"  # gossip timers: local (5x memberlist's LAN) or lan
    timeout: float = 2.0  # seconds a client waits for a reply
    skew: float = 300.0  # seconds clock-skew steps a clock by


@attrs.define(eq=False)
class Run:
    """One scenario run: the lab, its processes, and what they reported."""

    plan: Plan
    lab: Lab
    rng: random.Random
    dir: Path
    nodes: dict[str, Node] = attrs.Factory(dict)
    procs: list[subprocess.Popen[str]] = attrs.Factory(list)
    pumps: list[threading.Thread] = attrs.Factory(list)
    ops: list[dict[str, Any]] = attrs.Factory(list)  # the clients' reports
    samples: dict[str, list[dict[str, Any]]] = attrs.Factory(dict)  # the monitor's, per node
    owners: dict[str, list[str]] = attrs.Factory(dict)  # key -> owners, just before the fault
    lock: threading.Lock = attrs.Factory(threading.Lock)

    def spawn(
        self, ns: str, argv: list[str], log: str, on_line: Callable[[Any], None] | None
    ) -> subprocess.Popen[str]:
        """``argv`` in namespace ``ns``; stderr to ``log``, and stdout's JSON
        lines to ``on_line`` from a thread."""
        with open(self.dir / log, "a") as err:
            # A session of its own: Ctrl-C reaches this process alone, which
            # then takes the lab down in order.
            proc = subprocess.Popen(
                [*self.lab.run_in(ns), *argv],
                cwd=ROOT,
                text=True,
                stdout=subprocess.PIPE if on_line else subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        self.procs.append(proc)
        if on_line is not None:
            pump = threading.Thread(target=_pump, args=(proc, on_line), daemon=True)
            pump.start()
            self.pumps.append(pump)
        return proc

    def client(
        self, ns: str, *args: str, log: str, on_line: Callable[[Any], None]
    ) -> subprocess.Popen[str]:
        return self.spawn(ns, [sys.executable, "-m", "sims.netlab_client", *args], log, on_line)

    def query(self, *args: str, timeout: float = 60) -> Any:
        """A one-shot ``sims.netlab_client`` command in the bridge's namespace."""
        argv = [*self.lab.run_in(self.lab.switch), sys.executable, "-m", "sims.netlab_client"]
        done = subprocess.run(
            [*argv, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False
        )
        if done.returncode:
            raise RuntimeError(f"sims.netlab_client {args[0]}: {done.stderr.strip()[-500:]}")
        return json.loads(done.stdout)

    def start_node(self, i: int, profile: str, faketime: str | None) -> None:
        name, host = f"n{i}", self.lab.host(i)
        flags = f"--bind {host} --port {PORT} --gossip-profile {profile} --replicas 1"
        argv = [sys.executable, "-m", "keycafe", *flags.split()]
        if i > 1:
            argv += ["--seed", f"{self.lab.host(1)}:{CLUSTER_PORT}"]
        clock = None
        if faketime is not None:
            clock = self.dir / f"{name}.faketime"
            clock.write_text("+0\n")
            # Wall time only (trio's timers run on the monotonic clock); the
            # offset file is read again every second.
            env = f"LD_PRELOAD={faketime} FAKETIME_TIMESTAMP_FILE={clock} "
            env += "FAKETIME_CACHE_DURATION=1 FAKETIME_DONT_FAKE_MONOTONIC=1"
            argv = ["env", *env.split(), *argv]
        proc = self.spawn(self.lab.ns(i), argv, f"{name}.node.log", None)
        self.nodes[name] = Node(name, i, host, proc, clock)

    def on_sample(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.samples.setdefault(record["node"], []).append(record)

    def on_op(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.ops.append(record)

    def seen(self, since: float = 0.0, until: float = math.inf) -> dict[str, dict[str, Any]]:
        """Each node's newest sample taken between ``since`` and ``until``."""
        out = {}
        with self.lock:
            for name, samples in self.samples.items():
                at = next((s for s in reversed(samples) if s["t"] <= until), None)
                if at is not None and at["t"] >= since:
                    out[name] = at
        return out

    def settled(self) -> bool:
        """Every node answers, serves, and routes by one ring of all of them."""
        seen = self.seen(since=time.time() - 1)
        if len(seen) < len(self.nodes) or not all(s["up"] for s in seen.values()):
            return False
        rings = {(s["epoch"], s["members"], s["pending"], s["state"]) for s in seen.values()}
        return len(rings) == 1 and rings.pop()[1:] == (str(len(self.nodes)), "0", "ok")

    def names(self) -> list[str]:
        return sorted(self.nodes, key=lambda n: self.nodes[n].index)

    def ids(self) -> dict[str, str]:
        """Node id -> name."""
        return {s["id"]: n for n, s in self.seen().items() if s.get("id")}

    def most_written_primary(self) -> str:
        """The primary (just before the fault) of the most keys written so far."""
        with self.lock:
            keys = [op["key"] for op in self.ops if op["k"] != "read"]
        led = Counter(self.owners[k][0] for k in keys if self.owners.get(k))
        return led.most_common(1)[0][0] if led else self.names()[0]

    def coordinator(self) -> str:
        """The coordinator most nodes name."""
        ids = self.ids()
        votes = Counter(ids.get(s["coord"]) for s in self.seen().values() if s["up"])
        votes.pop(None, None)
        return str(votes.most_common(1)[0][0]) if votes else self.names()[0]

    def cutting(self, a: list[str], b: list[str], *, both: bool = True) -> Callable[[], None]:
        """What drops the packets from ``a`` to ``b`` (and back, with ``both``)."""
        ia = [self.nodes[n].index for n in a]
        ib = [self.nodes[n].index for n in b]
        rules = [self.lab.drop(ia, ib)] + ([self.lab.drop(ib, ia)] if both else [])
        return lambda: self.lab.rules(rules)

    def heal(self) -> None:
        self.lab.rules([])

    def signal_node(self, name: str, sig: signal.Signals) -> None:
        node = self.nodes[name]
        node.proc.send_signal(sig)
        node.paused = sig == signal.SIGSTOP

    def set_clock(self, name: str, offset: float) -> None:
        clock = self.nodes[name].clock
        assert clock is not None, "clock-skew runs every node under libfaketime"
        tmp = clock.with_suffix(".new")
        tmp.write_text(f"{offset:+.0f}s\n")
        tmp.replace(clock)  # libfaketime never reads half a file

    def stop(self) -> None:
        """Every process of the run killed, its pipes closed."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for pump in self.pumps:
            pump.join(timeout=5)
        for proc in self.procs:
            if proc.stdout is not None:
                proc.stdout.close()


def _pump(proc: subprocess.Popen[str], on_line: Callable[[Any], None]) -> None:
    assert proc.stdout is not None
    with contextlib.suppress(ValueError):  # the pipe closed under it
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                on_line(json.loads(line))


# -- scenarios ---------------------------------------------------------------------------


def halves(run: Run) -> Fault:
    names = run.names()
    cut = (len(names) - 1) // 2
    small, big = names[:cut], names[cut:]
    what = f"{','.join(small)} | {','.join(big)}"
    return Fault(
        what, frozenset(small), run.cutting(small, big), run.heal, labels=("minority", "majority")
    )


def isolate_primary(run: Run) -> Fault:
    victim = run.most_written_primary()
    rest = [n for n in run.names() if n != victim]
    what = f"{victim} (the primary of the most keys written) cut off"
    return Fault(what, frozenset([victim]), run.cutting([victim], rest), run.heal)


def one_way(run: Run) -> Fault:
    victim = run.coordinator()
    rest = [n for n in run.names() if n != victim]
    what = f"{victim} (the coordinator) hears nothing from the rest; what it sends reaches them"
    return Fault(what, frozenset([victim]), run.cutting(rest, [victim], both=False), run.heal)


def pause(run: Run) -> Fault:
    victim = run.rng.choice(run.names())
    return Fault(
        f"{victim} stopped (SIGSTOP), then continued (SIGCONT)",
        frozenset([victim]),
        lambda: run.signal_node(victim, signal.SIGSTOP),
        lambda: run.signal_node(victim, signal.SIGCONT),
    )


def clock_skew(run: Run) -> Fault:
    victim = run.most_written_primary()
    what = f"{victim}'s clock (the primary of the most keys written) steps {run.plan.skew:+.0f} s"
    return Fault(
        f"{what}, then back",
        frozenset([victim]),
        lambda: run.set_clock(victim, run.plan.skew),
        lambda: run.set_clock(victim, 0),
        isolating=False,
        clocks=True,
    )


def bridge(run: Run) -> Fault:
    """Two sides that cannot reach each other, and the middle node, which
    reaches both (as ``sims.partition``'s ``bridge``)."""
    names = run.names()
    middle = len(names) // 2
    left, right = names[:middle], names[middle + 1 :]
    return Fault(
        f"{','.join(left)} | {','.join(right)}, {names[middle]} reaches both",
        frozenset(left),
        run.cutting(left, right),
        run.heal,
        labels=("left", "rest"),
        isolating=False,
    )


SLOW_RUN: Final = 0.1  # seconds a slow node runs, ...
SLOW_STOP: Final = (0.1, 1.0)  # ... then seconds it is stopped, drawn in this range


def slow_node(run: Run) -> Fault:
    """A node picked by the seed runs a tenth of a second, then is stopped
    for 0.1-1 s, again and again: everything it handles is that late (as
    ``sims.partition``'s ``slow-node``: an overloaded host)."""
    victim = run.rng.choice(run.names())
    done = threading.Event()
    rng = random.Random(run.rng.random())

    def stutter() -> None:
        while not done.wait(SLOW_RUN):
            run.signal_node(victim, signal.SIGSTOP)
            if done.wait(rng.uniform(*SLOW_STOP)):
                break
            run.signal_node(victim, signal.SIGCONT)
        run.signal_node(victim, signal.SIGCONT)

    thread = threading.Thread(target=stutter, name=f"slow-{victim}", daemon=True)

    def end() -> None:
        done.set()
        thread.join(timeout=5)

    return Fault(
        f"{victim} handles everything 0.1-1 s late (stopped and continued again and again)",
        frozenset([victim]),
        thread.start,
        end,
        isolating=False,
    )


def lossy(run: Run) -> Fault:
    hosts = ", ".join(run.nodes[n].host for n in run.names())
    rule = f"ip saddr {{ {hosts} }} ip daddr {{ {hosts} }} numgen random mod 100 < {LOSS} drop"
    return Fault(
        f"{LOSS}% of the packets between nodes dropped",
        frozenset(),
        lambda: run.lab.rules([rule]),
        run.heal,
        isolating=False,
    )


SCENARIOS: Final[dict[str, Callable[[Run], Fault]]] = {
    "halves": halves,
    "isolate-primary": isolate_primary,
    "one-way": one_way,
    "pause": pause,
    "clock-skew": clock_skew,
    "lossy": lossy,
    "bridge": bridge,
    "slow-node": slow_node,
}
FAKETIME_SCENARIOS: Final = frozenset({"clock-skew"})


# -- a run -------------------------------------------------------------------------------


@attrs.frozen
class Result:
    scenario: str
    seed: int
    verdict: Verdict
    fault: str
    acked: int  # writes and deletes acknowledged
    unknown: int  # writes and deletes never answered
    reads: int  # reads answered
    during: dict[str, dict[str, int]]  # side -> outcome -> operations invoked during the fault
    resumed: float | None  # s after the fault, the rest's first write to a key the cut side led
    stopped: float | None  # s after the fault, the cut side's last answer before the heal
    detection: float  # the detection bound, s
    lease: float  # the lease bound, s
    settled: float | None  # s from the end of the workload until the cluster settled
    converged: float | None  # s the copies took to agree (None: they did not)
    exited: list[str]  # nodes that exited during the run
    skew: float | None  # the cut side's clock offset as it reported it, furthest during the fault
    kept: str | None = None  # where the history was kept


def bounds(profile: str, n: int) -> tuple[float, float]:
    """The detection bound (tests/node/helpers.py's, for this profile) and
    the lease bound (lease + period, docs/consistency.md)."""
    cfg = GossipConfig.local() if profile == "local" else GossipConfig.lan()
    shortest = suspicion_timeout(cfg.suspicion_mult, n, cfg.probe_interval)
    detection = n * cfg.probe_interval + cfg.suspicion_max_timeout_mult * shortest + 1.0
    return detection, LEASE_SHARE * shortest * (1 + 1 / HEARTBEATS_PER_LEASE)


def run(
    plan: Plan,
    *,
    keep: bool = False,
    workdir: Path = Path("/tmp/netlab"),
    index: int = 0,
    out: Out = print,
    on_fault: Callable[[Run], None] | None = None,
) -> Result:
    """Run one scenario on a lab of its own and judge it. The lab is gone
    when this returns or raises. ``on_fault`` (for tests) is called as the
    fault begins."""
    pid = os.getpid()
    lab = Lab(f"kc{pid}r{index}-", plan.nodes, f"10.77.{(pid + index) % 250 + 1}")
    rundir = workdir / f"{plan.scenario}-s{plan.seed}-{pid}r{index}"
    rundir.mkdir(parents=True, exist_ok=True)
    r = Run(plan=plan, lab=lab, rng=random.Random(plan.seed), dir=rundir)
    result: Result | None = None
    try:
        result = _run(r, out, on_fault)
        if keep or not result.verdict.ok or result.exited:
            result = attrs.evolve(result, kept=str(rundir))
        return result
    finally:
        # A second Ctrl-C (or SIGTERM) waits until the lab is down.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            r.stop()
            left = lab.down()
            if left:
                out(f"could not delete the namespaces {left}")
            if result is None or result.kept:
                _keep(r)
            else:
                shutil.rmtree(rundir, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def _keep(r: Run) -> None:
    with r.lock:
        ops = list(r.ops)
        samples = sorted((s for per in r.samples.values() for s in per), key=lambda s: s["t"])
    for name, records in (("history", ops), ("monitor", samples)):
        with open(r.dir / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(x) + "\n" for x in records)


def _run(r: Run, out: Out, on_fault: Callable[[Run], None] | None) -> Result:
    plan = r.plan
    scenario, seed, duration, profile = plan.scenario, plan.seed, plan.duration, plan.profile
    lab, n = r.lab, r.lab.size
    lab.up()
    faketime = faketime_lib() if scenario in FAKETIME_SCENARIOS else None
    specs = [f"n{i}={lab.host(i)}:{PORT}" for i in range(1, n + 1)]
    r.client(lab.switch, "monitor", *specs, log="monitor.log", on_line=r.on_sample)
    r.start_node(1, profile, faketime)
    if _wait(lambda: r.seen(since=time.time() - 1).get("n1", {}).get("up", False), 30) is None:
        raise RuntimeError(f"n1 did not start: see {r.dir / 'n1.node.log'}")
    for i in range(2, n + 1):
        r.start_node(i, profile, faketime)
    if _wait(r.settled, SETTLE) is None:
        raise RuntimeError(f"no settled ring of {n} nodes within {SETTLE:.0f} s")
    detection, lease = bounds(profile, n)
    out(
        f"{scenario}: {n} nodes on {lab.net}.0/24, {profile} gossip profile, seed {seed}; "
        f"detection bound {detection:.1f} s, lease bound {lease:.2f} s"
    )

    # The clients start together, once each has had time to start and to
    # read the slot map.
    start = time.time() + CLIENT_STARTUP
    until = start + duration
    for name in r.names():
        node = r.nodes[name]
        flags = f"--name {name} --node {node.address} --seed {seed} --start {start} "
        flags += f"--until {until} --timeout {plan.timeout}"
        r.client(lab.ns(node.index), "work", *flags.split(), log=f"{name}.log", on_line=r.on_op)
    workers = r.procs[-n:]
    timeline = Timeline(r, start, out, clocks=scenario in FAKETIME_SCENARIOS)
    # Who leads each key just before the fault: victims and the slots the
    # cut side led are picked by it.
    fault_at, heal_at = start + FAULTS_FROM, until - QUIET_TAIL
    timeline.wait(fault_at - 2.5)
    where = r.query("owners", r.nodes["n1"].address)
    names = {node.address: name for name, node in r.nodes.items()}
    r.owners = {key: [names[a] for a in addrs] for key, addrs in where.items()}
    timeline.wait(fault_at)
    fault = SCENARIOS[scenario](r)
    fault.begin()
    began = time.time()  # in force: nft has committed, or the signal is sent
    timeline.fault, timeline.began = fault, began
    out(f"fault at {began - start:.1f} s: {scenario}: {fault.what}")
    if on_fault is not None:
        on_fault(r)
    timeline.wait(heal_at)
    fault.end()
    ended = time.time()
    out(f"healed at {ended - start:.1f} s")
    timeline.wait(until + 0.6)

    for w in workers:
        try:
            w.wait(timeout=plan.timeout + 10)
        except subprocess.TimeoutExpired:
            w.kill()
    waited = time.time() - until
    settled = _wait(r.settled, SETTLE)
    final = r.query("final", *specs, "--converge", str(CONVERGE), timeout=CONVERGE + 120)
    (r.dir / "final.json").write_text(json.dumps(final))
    result = judge(r, fault, (start, until), (began, ended), final, (detection, lease), out)
    settle = f"settled in {settled:.1f} s" if settled is not None else "NOT settled"
    agreed = ""
    if final["differed_at_first"] and final["converged_after"] is not None:
        agreed = f" (agreed after {final['converged_after']:.1f} s)"
    elif final["differed_at_first"]:
        agreed = f" (not all agreed, or could be read, within {CONVERGE:.0f} s)"
    tables = "" if final["tables_agree"] else "; the nodes route by different tables"
    out(
        f"after the run: clients done in {waited:.1f} s, {settle}, "
        f"{final['differed_at_first']} keys' copies differed at first{agreed}{tables}"
    )
    out(f"verdict {'ok' if result.verdict.ok else 'FAILED'}; replay: {replay(plan)}")
    return attrs.evolve(
        result, scenario=scenario, seed=seed, settled=settled, exited=list(timeline.exited)
    )


def replay(plan: Plan) -> str:
    """The command line that runs ``plan`` again."""
    line = f"python -m sims.netlab {plan.scenario} --nodes {plan.nodes} --seed {plan.seed}"
    line += f" --duration {plan.duration:g}"
    default = Plan(scenario=plan.scenario)
    for flag in ("profile", "timeout", "skew"):
        value = getattr(plan, flag)
        if value != getattr(default, flag):
            line += f" --{flag} {value:g}" if isinstance(value, float) else f" --{flag} {value}"
    return line


def _wait(cond: Callable[[], bool], limit: float) -> float | None:
    """Seconds until ``cond`` held (polled), or None if it did not within ``limit``."""
    t0 = time.time()
    while not cond():
        if time.time() - t0 > limit:
            return None
        time.sleep(0.1)
    return time.time() - t0


def state_mark(sample: dict[str, Any] | None) -> str:
    """``S`` serving every slot; ``F`` serving, but some slots have no live
    copy (CLUSTERDOWN for those); ``H`` halted, no majority heard (by gossip,
    or within its lease): it serves no key; ``-`` no answer."""
    if sample is None or not sample["up"]:
        return "-"
    if sample["state"] == "ok":
        return "S"
    if sample["majority"] == "1" and (
        sample["slots_fail"] != "0" or sample.get("assigned") != str(SLOT_COUNT)
    ):
        return "F"
    return "H"


class Timeline:
    """A line per second of the workload: node states, coordinators, ops per side."""

    def __init__(self, run: Run, start: float, out: Out, clocks: bool) -> None:
        self.run = run
        self.start = start
        self.out = out
        self.clocks = clocks  # show each node's clock offset
        self.second = 1
        self.fault: Fault | None = None
        self.began = math.inf
        self.exited: list[str] = []

    def wait(self, t: float) -> None:
        """Print the lines due before ``t``, then return at ``t``."""
        # Each line half a second after its second: the clients' reports are in.
        while (tick := self.start + self.second + 0.5) <= t:
            time.sleep(max(0.0, tick - time.time()))
            for name, node in self.run.nodes.items():
                if node.proc.poll() is not None and name not in self.exited:
                    self.exited.append(name)
                    self.out(f"{name} exited with status {node.proc.returncode}")
            self.out(self.line(self.second))
            self.second += 1
        time.sleep(max(0.0, t - time.time()))

    def line(self, second: int) -> str:
        r = self.run
        lo, hi = self.start + second - 1, self.start + second
        seen = r.seen(since=lo - 1, until=hi)
        ids = r.ids()
        states = []
        for name in r.names():
            sample = seen.get(name)
            node = r.nodes[name]
            mark = "X" if name in self.exited else "P" if node.paused else state_mark(sample)
            skew = sample.get("skew") if sample is not None else None
            if self.clocks and skew is not None and abs(skew) >= 1:
                mark += f"{skew:+.0f}s"
            states.append(f"{name} {mark}")
        up = [s for s in seen.values() if s["up"]]
        coords = sorted({f"{ids.get(s['coord'], '?')}/t{s['term']}" for s in up})
        epochs = sorted({int(s["epoch"]) for s in up})
        with r.lock:
            ops = [op for op in r.ops if lo <= op["t1"] < hi]
        sides = [
            f"{label} ok {c['ok']} fail {c['fail']} unk {c['unknown']}"
            for label, c in by_side(ops, self.fault if hi > self.began else None).items()
        ]
        return (
            f"{second:4d}s {' '.join(states)} | coord {' '.join(coords) or '-'} "
            f"| epoch {','.join(map(str, epochs)) or '-'} | {' | '.join(sides)}"
        )


def node_of(client: str) -> str:
    return client.split(".")[0]  # "n3.w": n3's writer


def by_side(ops: list[dict[str, Any]], fault: Fault | None) -> dict[str, Counter[str]]:
    """Outcomes per side of the fault (one group, ``all``, before it)."""
    if fault is None or not fault.cut:
        return {"all": Counter(op["o"] for op in ops)}
    cut, rest = fault.labels
    out: dict[str, Counter[str]] = {cut: Counter(), rest: Counter()}
    for op in ops:
        out[cut if node_of(op["c"]) in fault.cut else rest][op["o"]] += 1
    return out


def to_op(record: dict[str, Any]) -> Op:
    """A client's report as the checker's ``Op`` (no answer: no completion)."""
    value = record["v"]
    return Op(
        record["c"],
        record["k"],
        record["key"].encode(),
        value.encode("latin-1") if value is not None else None,
        record["t0"],
        record["t1"] if record["o"] != "unknown" else None,
        record["o"],
    )


def examples(
    verdict: Verdict, records: list[dict[str, Any]], start: float, names: dict[str, str]
) -> list[str]:
    """The first few lost writes and stale reads, each with the acknowledged
    write it missed (times in seconds from the start of the workload)."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_key.setdefault(rec["key"], []).append(rec)

    def made(key: str, value: bytes | None) -> str:
        text = value.decode("latin-1") if value is not None else None
        makers = [w for w in by_key[key] if w["k"] != "read" and w["v"] == text]
        return f"{text} (invoked at {makers[0]['t0'] - start:.2f} s)" if makers else f"{text}"

    def missed(key: str, before: float) -> str:
        acked = [w for w in by_key[key] if w["k"] != "read" and w["o"] == "ok"]
        acked = [w for w in acked if w["t1"] < before]
        if not acked:
            return "nothing"
        w = max(acked, key=lambda w: w["t1"])
        return (
            f"{w['v']} (acknowledged at {w['t1'] - start:.2f} s by {names.get(w['at'], w['at'])})"
        )

    out = []
    for op in sorted(verdict.stale_reads, key=lambda op: op.invoked)[:5]:
        key = op.key.decode()
        out.append(
            f"  stale read of {key} at {op.invoked - start:.2f} s by {op.client}: "
            f"{made(key, op.value)}, after {missed(key, op.invoked)}"
        )
    for op in sorted(verdict.lost, key=lambda op: op.invoked)[:5]:
        out.append(
            f"  lost {op.kind} of {op.key.decode()} by {op.client}: {op.value!r}, "
            f"invoked at {op.invoked - start:.2f} s"
        )
    return out


def verdict_of(
    history: list[Op], final: dict[str, Any], groups: dict[str, str], span: tuple[float, float]
) -> Verdict:
    """The checker's verdict. A key some copy of which the final reads could
    not read is reported as such, not judged: a view without it would count
    it absent (and every write to it lost)."""
    unread = {k.encode() for k in final["unread"]}
    views = {
        name: {
            k.encode(): None if v is None else v.encode("latin-1")
            for k, v in view.items()
            if k.encode() not in unread
        }
        for name, view in final["views"].items()
    }
    judged = [op for op in history if op.key not in unread]
    verdict = check(judged, views, groups=groups, span=span)
    # How long each side went without an acknowledged operation: all of them.
    unavailable = check(history, {}, groups=groups, span=span).unavailable
    return attrs.evolve(verdict, unread=sorted(unread), unavailable=unavailable)


def judge(
    r: Run,
    fault: Fault,
    span: tuple[float, float],
    window: tuple[float, float],
    final: dict[str, Any],
    limits: tuple[float, float],
    out: Out,
) -> Result:
    """The checker's verdict on the run's history, and the fault's timings."""
    with r.lock:
        records = list(r.ops)
    history = [to_op(rec) for rec in records]
    side = {n: fault.labels[0] if n in fault.cut else fault.labels[1] for n in r.nodes}
    groups = {op.client: side[node_of(op.client)] for op in history}
    verdict = verdict_of(history, final, groups, span)
    began, ended = window
    inside = [rec for rec in records if began <= rec["t0"] < ended]
    # The rest's first write to a key the cut side led: when it could write those slots again.
    led = {k for k, owners in r.owners.items() if owners and owners[0] in fault.cut}
    resumed = min(
        (
            rec["t1"] - began
            for rec in inside
            if rec["k"] != "read"
            and rec["o"] == "ok"
            and rec["key"] in led
            and node_of(rec["c"]) not in fault.cut
        ),
        default=None,
    )
    # The cut side's last answer to anyone before the heal: when it stopped serving.
    cut_at = {r.nodes[n].address for n in fault.cut}
    stopped = (
        max(
            (
                rec["t1"] - began
                for rec in inside
                if rec["o"] == "ok" and rec["at"] in cut_at and rec["t1"] < ended
            ),
            default=0.0,
        )
        if fault.isolating
        else None
    )
    mutations = Counter(op.outcome for op in history if op.mutates)
    reads = sum(1 for op in history if op.kind == "read" and op.outcome == "ok")
    out(
        f"operations: {mutations['ok']} writes acknowledged, {mutations['fail']} refused, "
        f"{mutations['unknown']} unanswered; {reads} reads"
    )
    out(verdict.summary())
    names = {node.address: name for name, node in r.nodes.items()}
    for line in examples(verdict, records, span[0], names):
        out(line)
    detection, lease = limits
    if fault.cut:
        who = ",".join(sorted(fault.cut))
        when = f"{resumed:.2f} s after the fault" if resumed is not None else "not before the heal"
        out(
            f"writes to the slots {who} led: the first acknowledged on the other side {when} "
            f"(detection bound {detection:.1f} s)"
        )
    if stopped is not None:
        out(
            f"the cut side answered its last operation {stopped:.2f} s after the fault "
            f"(lease bound {lease:.2f} s)"
        )
    with r.lock:
        offsets = [
            s["skew"]
            for n in fault.cut
            for s in r.samples.get(n, [])
            if began <= s["t"] < ended and s.get("skew") is not None and fault.clocks
        ]
    skew = max(offsets, key=abs, default=None)
    if skew is not None and abs(skew) >= 1:
        out(f"the cut side's clock, as it reported it: {skew:+.1f} s at most during the fault")
    during = {label: dict(c) for label, c in by_side(inside, fault).items()}
    return Result(
        scenario="",
        seed=0,
        verdict=verdict,
        fault=fault.what,
        acked=mutations["ok"],
        unknown=mutations["unknown"],
        reads=reads,
        during=during,
        resumed=resumed,
        stopped=stopped,
        detection=detection,
        lease=lease,
        settled=None,
        converged=final["converged_after"],
        exited=[],
        skew=skew,
    )


# -- many runs, and the command line -----------------------------------------------------


def classes(v: Verdict) -> dict[str, int]:
    """How many of each kind of violation the checker found."""
    return {
        "lost": sum(1 for op in v.lost if op.kind == "write"),
        "resurrected": len(v.resurrected),
        "stale": len(v.stale_reads),
        "phantoms": len(v.phantoms),
        "diverged": len(v.diverged),
        "nonlinear": len(v.nonlinear),
        "duplicates": len(v.duplicates),
        "unread": len(v.unread),
    }


def spread(xs: list[float]) -> str:
    return f"p50 {statistics.median(xs):.2f} s, max {max(xs):.2f} s" if xs else "-"


def totals(results: list[Result]) -> list[str]:
    total: Counter[str] = Counter()
    runs_with: Counter[str] = Counter()
    for res in results:
        found = classes(res.verdict)
        total.update(found)
        runs_with.update(k for k, v in found.items() if v)
    resumed = [x.resumed for x in results if x.resumed is not None]
    never = sum(1 for x in results if x.resumed is None)
    stopped = [x.stopped for x in results if x.stopped is not None]
    lines = [
        f"runs: {len(results)}; verdicts failed: {sum(not x.verdict.ok for x in results)}"
        f" (seeds {[x.seed for x in results if not x.verdict.ok]})",
        f"writes acknowledged: {sum(x.acked for x in results)}; unanswered: "
        f"{sum(x.unknown for x in results)}; reads: {sum(x.reads for x in results)}",
        *(f"{k}: {total[k]} (in {runs_with[k]} runs)" for k in classes(results[0].verdict)),
        f"the other side wrote the cut side's slots again after: {spread(resumed)}"
        + (f"; not before the heal in {never} runs" if never else "")
        + f" (detection bound {results[0].detection:.1f} s)",
        f"the cut side answered until: {spread(stopped)} after the fault "
        f"(lease bound {results[0].lease:.2f} s)",
        f"nodes exited: {sum(len(x.exited) for x in results)}; runs not settled: "
        f"{sum(x.settled is None for x in results)}; copies agreed after: "
        f"{spread([x.converged for x in results if x.converged is not None])}"
        + f"; did not agree: {sum(x.converged is None for x in results)} runs",
    ]
    skews = [x.skew for x in results if x.skew is not None]
    if any(abs(x) >= 1 for x in skews):
        lines.append(f"the cut side's clock as it reported it: {spread(skews)}")
    return lines


def row(res: Result) -> dict[str, Any]:
    """One run, for ``--json``."""
    fields = attrs.asdict(res, filter=lambda a, _: a.name != "verdict")
    v = res.verdict
    return {
        **fields,
        "ok": v.ok,
        **classes(v),
        "unavailable": v.unavailable,
        "load": os.getloadavg()[0],
    }


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS))
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of workload")
    parser.add_argument("--runs", type=int, default=1, help="seeds S..S+N-1, one after another")
    parser.add_argument("--profile", choices=["local", "lan"], default="local")
    parser.add_argument("--timeout", type=float, default=2.0, help="a client's request timeout")
    parser.add_argument("--skew", type=float, default=300.0, help="clock-skew's step, seconds")
    parser.add_argument("--keep", action="store_true", help="keep every run's history")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/netlab"))
    parser.add_argument("--json", type=Path, help="append a line per run to this file")
    parser.add_argument("--cleanup", action="store_true", help="delete killed runs' namespaces")
    args = parser.parse_args(argv)
    why = missing(args.scenario)
    if why is not None:
        print(f"sims.netlab {why}", file=sys.stderr)
        return 2
    if args.cleanup:
        print("deleted:", " ".join(cleanup_stale()) or "nothing")
        return 0
    if args.scenario is None:
        parser.error("name a scenario")
    if args.duration < FAULTS_FROM + QUIET_TAIL + 10:
        parser.error("--duration must leave room for the faults: at least 30 s")
    if args.nodes < 3:
        parser.error("--nodes: at least 3")
    # SIGTERM and SIGHUP end a run as Ctrl-C does: through its clean-up.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    results = []
    try:
        for k in range(args.runs):
            plan = Plan(
                scenario=args.scenario,
                nodes=args.nodes,
                seed=args.seed + k,
                duration=args.duration,
                profile=args.profile,
                timeout=args.timeout,
                skew=args.skew,
            )
            res = run(plan, keep=args.keep, workdir=args.dir, index=k)
            results.append(res)
            if res.kept:
                print(f"history kept in {res.kept}")
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row(res)) + "\n")
            print(flush=True)
    except KeyboardInterrupt:
        print("sims.netlab: stopped; the lab is down", file=sys.stderr)
        return 130
    if args.runs > 1:
        print("\n".join(totals(results)))
    return 0 if all(x.verdict.ok for x in results) else 1


if __name__ == "__main__":
    sys.exit(main())
