"""The coordinator: a role one member holds, elected from the gossip view.

Every member computes the same answer from a converged view: the coordinator
is the live voter with the lowest node id (voters are the ring's members; until
the ring is wired in, every member not known to have left, the reaped dead
included: forgetting the dead must not shrink the quorum). An elected member claims
the role by publishing a term in its gossip metadata, one above any term it has
seen. Every decision the coordinator publishes (ring epochs, issue 4) will carry
that term, and members ignore decisions from a term below the highest they have
seen: that fences a stale coordinator, one cut off in a minority that has not
noticed yet. And a coordinator may act only while it sees a majority of the
voters alive (the keep-majority rule), so a minority side never claims a term
or changes the ring.

Until slot streaming exists (issue 4), the coordinator admits a live member to
the ring at once; then admission will wait until the member has loaded its
slots. Pure: a function of member records, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

from keycafe.gossip.core import Gossip
from keycafe.gossip.messages import MemberInfo, Ring, State

# Gossip metadata key holding the term a member claims as coordinator.
TERM_KEY: Final = "coordinator-term"


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


def claimed_term(member: MemberInfo) -> int:
    raw = member.meta.get(TERM_KEY, "")
    return int(raw) if raw.isdigit() else 0


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
    if coordinator == me and majority and (term == 0 or term < highest or _tied(terms, me)):
        claim = highest + 1
    return Assessment(
        coordinator=coordinator, term=term, highest_term=highest, majority=majority, claim=claim
    )


def _tied(terms: dict[str, int], me: str) -> bool:
    """Another member claims the same term as ``me``: outbid it."""
    mine = terms.get(me, 0)
    return any(t == mine for node, t in terms.items() if node != me)


def step(core: Gossip, now: float) -> Assessment:
    """Assess ``core``'s view: claim the role if elected, and as the established
    coordinator publish a new ring epoch when the live members differ from the
    ring's (admit the alive, drop the dead and the departed)."""
    voters = set(core.ring.members) if core.ring is not None else None
    a = assess(core.node, core.known_members(), voters)
    if a.claim is not None:
        core.update_meta({**core.me.meta, TERM_KEY: str(a.claim)}, now)
        a = assess(core.node, core.known_members(), voters)
    if a.coordinator == core.node and a.established:
        live = sorted(m.node for m in core.member_list() if m.state in (State.ALIVE, State.SUSPECT))
        ring = core.ring
        if ring is None or list(ring.members) != live:
            core.propose_ring(
                Ring(
                    epoch=ring.epoch + 1 if ring is not None else 1,
                    term=a.term,
                    coordinator=core.node,
                    members=tuple(live),
                ),
                now,
            )
    return a
