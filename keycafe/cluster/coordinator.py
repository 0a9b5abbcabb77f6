"""The coordinator: a role one member holds, elected from the gossip view.

Every member computes the same answer from a converged view: the coordinator
is the live voter with the lowest node id (voters are the ring's members; before
the first ring, every member not known to have left, the reaped dead included:
forgetting the dead must not shrink the quorum). An elected member claims
the role by publishing a term in its gossip metadata, one above any term it has
seen. Every decision the coordinator publishes (a ring epoch) carries
that term, and members ignore decisions from a term below the highest they have
seen: that fences a stale coordinator, one cut off in a minority that has not
noticed yet. And a coordinator may act only while it sees a majority of the
voters alive (the keep-majority rule), so a minority side never claims a term
or changes the ring; and, in a node, only while it holds its lease (it hears
from a majority of the ring on its peer links, keycafe/cluster/lease.py). A
gossip view can count a majority the node cannot reach: a node whose own
traffic is lost hears everyone and declares them dead one by one, and one
cut off by a partition that spreads still sees a member of the other side
alive after it has declared the rest dead. Elected then, it claimed a term
above the majority's and published a ring that marked the majority down;
after the heal that ring won and stale copies were served again (found by
``python -m sims.netlab halves`` and ``python -m sims.partition nemesis``).

Ring changes (``next_ring``) take two steps, so that no key is ever where
clients are not sent. The first ring holds every live member (nobody holds
data before a ring exists). After that, when the members the ring should have
(the live ones, less those asking to leave, plus alive newcomers) differ from
its members, the coordinator first publishes them as the ring's ``pending``
set in a new epoch; every member then streams to their new owners the slots
it holds that the change moves, and says so (``READY_KEY`` = that epoch, in
its gossip metadata); once every live member of both sets has, the
coordinator publishes the change itself as the next epoch. A member of the
proposal that dies or leaves meanwhile, or a ring member it left out that is
back, makes a new proposal, which members handle afresh; newcomers wait for
the next one.

Pure: ``step`` takes a member's view (its id, the member records, the ring it
holds) and returns its assessment and the decisions to carry out; it changes
nothing itself. ``keycafe.cluster.effects`` applies the decisions to a gossip
core and a ring keeper, for the node's shell and the simulators alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, TypeAlias

import attrs

from keycafe.cluster.ring_record import MAX_EPOCH, MAX_TERM, Ring
from keycafe.gossip.messages import Address, MemberInfo, State

# Gossip metadata key holding the term a member claims as coordinator.
TERM_KEY: Final = "coordinator-term"
# "<term>.<epoch>": the member has streamed out what that proposal moves.
READY_KEY: Final = "ready-epoch"
# "1": the member asks to leave the ring (a graceful shutdown).
LEAVING_KEY: Final = "leaving"
# A random id each node process picks at start: a member back with another
# one was restarted, and holds none of its old copies.
BOOT_KEY: Final = "boot"
# "<boot id>": this process, started afresh, found itself a live owner in a
# ring that never admitted it (it was restarted under its id before the
# cluster declared it dead), so its copies are empty. The coordinator
# declares it down, as a member back with none of its copies (``EMPTY_BOOT``),
# and it comes back through a change that streams it fresh ones. "" once it
# is in such a change.
RESTARTED_KEY: Final = "restarted"
EMPTY_BOOT: Final = "-"  # the boot id recorded for it: no process has it
# "<term>.<epoch>" of the last ring the coordinator published: who is behind pulls it.
RING_KEY: Final = "ring"
# "<term>.<epoch>" of the ring a member follows. A ring broadcast and the
# coordinator's RING_KEY travel together, so a member can miss both; the
# coordinator sees it is behind here and pushes its state to it.
HELD_KEY: Final = "ring-held"


@attrs.frozen(kw_only=True)
class Assessment:
    coordinator: str | None  # the elected member, if any voter is alive
    term: int  # the term the elected member has claimed so far (0: none yet)
    highest_term: int  # the highest term any member has claimed
    majority: bool  # more than half of the voters is alive (not suspect) in this view
    claim: int | None  # for the member assessing: the term to claim now, if any

    @property
    def established(self) -> bool:
        """The elected member holds the highest term and may act."""
        return self.majority and self.term > 0 and self.term == self.highest_term


@attrs.frozen(kw_only=True)
class ClaimTerm:
    """Claim the coordinator role: set ``TERM_KEY`` to ``term`` in our metadata."""

    term: int


@attrs.frozen(kw_only=True)
class PublishRing:
    """Adopt and spread ``ring`` (the established coordinator's decision)."""

    ring: Ring


@attrs.frozen(kw_only=True)
class AnnounceRing:
    """Put the version of the ring we published in our metadata (``RING_KEY``),
    so members still behind it can pull it from us."""

    version: tuple[int, int]


@attrs.frozen(kw_only=True)
class PullRing:
    """The coordinator at ``addr`` holds ring ``version``: pull it if ours is older."""

    version: tuple[int, int]
    addr: Address


@attrs.frozen(kw_only=True)
class PushRing:
    """Member ``node`` at ``addr`` says it holds an older ring than ours
    (``HELD_KEY``): exchange state with it, if it stays behind."""

    node: str
    addr: Address
    version: tuple[int, int]


Decision: TypeAlias = ClaimTerm | PublishRing | AnnounceRing | PullRing | PushRing


def claimed_term(member: MemberInfo) -> int:
    """The term ``member`` claims; a claim above MAX_TERM is no claim
    (ring_record.py: no honest member gets there)."""
    raw = member.meta.get(TERM_KEY, "")
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return 0
    term = int(raw)
    return term if term <= MAX_TERM else 0


def assess(me: str, members: Iterable[MemberInfo], voters: set[str] | None = None) -> Assessment:
    """Who coordinates, by ``me``'s view, and whether ``me`` must claim the role."""
    members = list(members)
    if voters is None:
        voters = {m.node for m in members if m.state != State.LEFT}
    live = sorted(
        m.node for m in members if m.node in voters and m.state in (State.ALIVE, State.SUSPECT)
    )
    # Acting needs more than half of the voters alive, not merely unsuspected
    # of death: counting suspects would let a minority ratchet the ring down
    # one death at a time and keep a "majority" of what is left.
    alive = sum(1 for m in members if m.node in voters and m.state == State.ALIVE)
    majority = 2 * alive > len(voters)
    terms = {m.node: claimed_term(m) for m in members}
    highest = max(terms.values(), default=0)
    coordinator = live[0] if live else None
    term = terms.get(coordinator, 0) if coordinator is not None else 0
    claim = None
    wants = term == 0 or term < highest or _tied(terms, me)
    # Never above MAX_TERM: at the bound nobody can outbid it (ring_record.py).
    if coordinator == me and majority and wants and highest < MAX_TERM:
        claim = highest + 1
    return Assessment(
        coordinator=coordinator, term=term, highest_term=highest, majority=majority, claim=claim
    )


def _tied(terms: dict[str, int], me: str) -> bool:
    """Another member claims the same term as ``me``: outbid it."""
    mine = terms.get(me, 0)
    return any(t == mine for node, t in terms.items() if node != me)


# Each slot's owners (primary first) for a member set: ``keycafe.cluster.ring.slot_owners``.
OwnersOf: TypeAlias = Callable[[tuple[str, ...]], tuple[tuple[str, ...], ...]]


def stranded(ring: Ring, owners: OwnersOf, dead: Iterable[str] | None = None) -> frozenset[str]:
    """Members of slots whose every owner is down and whose owner declared
    down last (the one with the newest copy) is dead (``dead``: by default
    every member declared down). Such a slot must answer CLUSTERDOWN until
    that owner comes back with its copy, never be handed, empty or stale, to
    a new owner. A ring of one copy per slot
    (``--replicas 0``) strands nothing: its users chose to have the rest
    served without a dead node's share rather than wait for it."""
    gone = set(ring.down if dead is None else dead)
    if not gone:
        return frozenset()
    down = set(ring.down)
    out: set[str] = set()
    for o in set(owners(ring.members)):  # few distinct lists: one per token run
        # Held until its owner declared down last is back: the others went
        # down earlier, and it went on serving (and acknowledging) without
        # them, so theirs are stale copies.
        if len(o) > 1 and down.issuperset(o) and gone.issuperset(ring.newest_copies(o)):
            out.update(o)
    return frozenset(out)


def next_ring(
    ring: Ring | None,
    members: Iterable[MemberInfo],
    coordinator: str,
    term: int,
    owners: OwnersOf | None = None,
) -> Ring | None:
    """The ring to publish next by the established ``coordinator``, or None.
    ``owners`` (how slots map to members) lets it see stranded slots; without
    it, none are assumed."""
    by_id = {m.node: m for m in members}
    live = {n for n, m in by_id.items() if m.state in (State.ALIVE, State.SUSPECT)}
    if ring is None:
        founders = tuple(sorted(live))
        return Ring(epoch=1, term=term, coordinator=coordinator, members=founders) if live else None
    wanted = tuple(
        sorted(
            n
            for n in live
            if by_id[n].meta.get(LEAVING_KEY) != "1"
            # A newcomer (or a member back from being declared down) must be
            # alive, not merely unsuspected of death; once in a proposal, a
            # suspicion alone does not take it out again (at N=100 on a busy
            # machine, suspicions that were refuted withdrew every proposal
            # and the ring never formed).
            and (
                (n in ring.members and n not in ring.down)
                or n in ring.pending
                or by_id[n].state == State.ALIVE
            )
        )
    )
    if not wanted:
        return None  # never an empty ring: the last member simply goes
    if ring.epoch >= MAX_EPOCH:
        return None  # nothing can follow it (ring_record.py)

    def publish(
        members: tuple[str, ...],
        pending: tuple[str, ...] = (),
        down: tuple[str, ...] = (),
        empty: frozenset[str] = frozenset(),
    ) -> Ring:
        # Each member down keeps the epoch it went down in, and the boot id it
        # had then; a new one, this epoch and its boot id as last known (none,
        # for one restarted with nothing: ``empty``).
        since = tuple(ring.down_since(n) if n in ring.down else ring.epoch + 1 for n in down)
        boots = tuple(
            ring.down_boot(n)
            if n in ring.down
            else (EMPTY_BOOT if n in empty else _boot(by_id.get(n)))
            for n in down
        )
        return Ring(
            epoch=ring.epoch + 1,
            term=term,
            coordinator=coordinator,
            members=members,
            pending=pending,
            down=down,
            down_epochs=since if down else (),
            down_boots=boots if any(boots) else (),
        )

    # Failover first: a ring member known dead (or gone) is declared down in
    # the next epoch, with nothing else changed, so its slots are served at
    # once by their next owner, which holds an in-sync copy. Removing it (and
    # streaming new copies) is a change like any other, afterwards.
    down = set(ring.down)
    dead = {n for n in ring.members if n not in down and n not in live}
    # ... and so is one restarted under its id before it was declared dead:
    # alive, but with none of its copies.
    empty = frozenset(
        n for n in ring.members if n not in down and n in live and _restarted(by_id[n])
    )
    if dead or empty:
        fallen = tuple(sorted(dead | empty))
        return publish(ring.members, ring.pending, ring.down + fallen, empty)
    # Dead, or back as another process (restarted: none of its old copies).
    gone = {n for n in down if n not in live or _rebooted(ring, by_id[n])}
    if owners is not None and stranded(ring, owners, gone):
        # Some slot has no live copy: hold the ring as it is (the slots that
        # have a copy are served by it; a rebalance under way is withdrawn)
        # until an owner of every such slot is back. Then the usual change
        # brings the members back: one whose slot had no other copy keeps its
        # own (the hand-off keeps a down member's copies of such slots), and
        # gets fresh copies of the others streamed.
        return publish(ring.members, (), ring.down) if ring.pending else None
    settled = wanted == ring.members and not ring.down
    if not ring.pending:
        return None if settled else publish(ring.members, wanted, ring.down)
    pending = set(ring.pending)
    if not pending <= set(wanted) or (set(wanted) - pending) & (set(ring.members) - down):
        # A member of the proposal died or is leaving while it was carried
        # out, or a ring member it leaves out is back (refuted its death):
        # propose again (or withdraw, if nothing else changed). Carrying on
        # would stream the returning member's share out, then back.
        return publish(ring.members, () if settled else wanted, ring.down)
    # Newcomers wait for the proposal under way to finish, and come in the
    # next one: replacing a proposal for each arrival restarts every member's
    # streaming, and members arriving one after another would starve the change.
    if not not_ready(ring, by_id.values()):
        return publish(ring.pending)
    return None


def _boot(member: MemberInfo | None) -> str:
    return member.meta.get(BOOT_KEY, "") if member is not None else ""


def _restarted(member: MemberInfo) -> bool:
    """``member`` says this process of it was never admitted (``RESTARTED_KEY``)."""
    said = member.meta.get(RESTARTED_KEY, "")
    return bool(said) and said == _boot(member)


def _rebooted(ring: Ring, member: MemberInfo) -> bool:
    """``member`` (in ``ring.down``) is back as another process than the one
    declared down."""
    then = ring.down_boot(member.node)
    return bool(then) and _boot(member) != then


def not_ready(ring: Ring, members: Iterable[MemberInfo]) -> frozenset[str]:
    """Live members involved in ``ring``'s proposal that have not yet said they
    streamed their part of it."""
    version = ready_value(ring.term, ring.epoch)
    return frozenset(
        m.node
        for m in members
        if m.state in (State.ALIVE, State.SUSPECT)
        and (m.node in ring.members or m.node in ring.pending)
        and m.meta.get(READY_KEY) != version
    )


def ready_value(term: int, epoch: int) -> str:
    """What ``READY_KEY`` holds for the proposal (term, epoch): the term too,
    since a new coordinator may publish another proposal at the same epoch."""
    return f"{term}.{epoch}"


def step(
    me: str,
    members: Iterable[MemberInfo],
    ring: Ring | None,
    owners: OwnersOf | None = None,
    *,
    leased: bool = True,
) -> tuple[Assessment, list[Decision]]:
    """Assess ``me``'s view (``members``: every record it holds, the reaped
    dead included) and decide: claim the role if elected; as the established
    coordinator, publish a new ring epoch when ``next_ring`` says so; else pull
    the coordinator's ring if it says it holds a newer one than ``ring``.
    Without ``leased`` (``me`` does not hear from a majority of the ring on
    its links) it neither claims nor publishes, whatever its view counts."""
    members = list(members)
    voters = set(ring.members) if ring is not None else None
    decisions: list[Decision] = []
    a = assess(me, members, voters)
    if not leased:
        # Assessed as it is (the timeline shows it), but with no right to act.
        a = attrs.evolve(a, claim=None)
    if a.claim is not None:
        decisions.append(ClaimTerm(term=a.claim))
        # Assess again as the view will be once the claim is in our metadata.
        members = [_claiming(m, a.claim) if m.node == me else m for m in members]
        a = assess(me, members, voters)
    if a.coordinator == me and a.established and leased:
        new = next_ring(ring, members, me, a.term, owners)
        if new is not None:
            decisions += [PublishRing(ring=new), AnnounceRing(version=new.version)]
        elif ring is not None:
            for m in members:
                if m.node != me and m.state == State.ALIVE and m.node in ring.members:
                    held = _ring_version(m.meta.get(HELD_KEY, ""))
                    if held is not None and held < ring.version:
                        decisions.append(PushRing(node=m.node, addr=m.addr, version=held))
    elif a.coordinator is not None and a.coordinator != me:
        holder = next((m for m in members if m.node == a.coordinator), None)
        if holder is not None:
            version = _ring_version(holder.meta.get(RING_KEY, ""))
            if version is not None and (ring is None or ring.version < version):
                decisions.append(PullRing(version=version, addr=holder.addr))
    return a, decisions


def _claiming(member: MemberInfo, term: int) -> MemberInfo:
    return attrs.evolve(member, meta={**member.meta, TERM_KEY: str(term)})


def _ring_version(text: str) -> tuple[int, int] | None:
    term, _, epoch = text.partition(".")
    if not all(x.isascii() and x.isdigit() and len(x) <= 19 for x in (term, epoch)):
        return None
    version = (int(term), int(epoch))
    # No ring exceeds these (ring_record.py): a version beyond them is no
    # version, not one every member would chase for ever.
    return version if version[0] <= MAX_TERM and version[1] <= MAX_EPOCH else None
