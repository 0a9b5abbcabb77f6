"""Gossip settings: one frozen record, memberlist's LAN profile by default.

Every default is memberlist's ``DefaultLANConfig`` (hashicorp/memberlist,
config.go) unless its comment says otherwise; times are in seconds.
"""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class GossipConfig:
    # SWIM: probe one member every probe_interval; wait probe_timeout for its
    # ack before asking indirect_checks others to probe it (ping-req).
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    # Lifeguard: suspicion lasts between alpha*log10(N)*probe_interval (with
    # enough independent confirmations) and beta times that (with none).
    suspicion_mult: int = 4  # alpha
    suspicion_max_timeout_mult: int = 6  # beta
    # Lifeguard's local health multiplier saturates here (awareness.go).
    awareness_max_multiplier: int = 8
    # Dissemination: each update is sent retransmit_mult * ceil(log10(N+1))
    # times, piggybacked and in gossip rounds to gossip_nodes random members.
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    # Keep gossiping to a dead member this long so it learns it was declared
    # dead (and refutes, if it is alive); then reap it from the table.
    gossip_to_the_dead_time: float = 30.0
    # Full state exchange over TCP; the interval is scaled up above 32 members.
    push_pull_interval: float = 30.0
    # Largest datagram we send: under the 1500-byte Ethernet MTU with room for
    # IP/UDP headers and a later authentication tag (memberlist uses 1400 too).
    max_datagram: int = 1400
    # Forget a reaped member's last incarnation after this long: until then a
    # stale message cannot bring it back (keycafe's addition).
    reaped_memory: float = 24 * 3600.0
    # Lifeguard on (True) or plain SWIM (False), for measuring its effect.
    lifeguard: bool = True
    # keycafe's probe schedule (docs/gossip.md): every member walks the same
    # hashed order of members, shifted by a round number shared through the
    # clock, so each member is probed once per round by someone; a crash is
    # then first probed within about two probe intervals. False: memberlist's
    # independently shuffled lists, where that wait has an exponential tail
    # (at N=100, 1% of crashes wait over 4.5 s for their first probe).
    aligned_probes: bool = True

    @classmethod
    def lan(cls) -> GossipConfig:
        return cls()

    @classmethod
    def local(cls) -> GossipConfig:
        """Fast timers for tests and a laptop (about 5x memberlist's LAN)."""
        return cls(
            probe_interval=0.2,
            probe_timeout=0.1,
            gossip_interval=0.05,
            gossip_to_the_dead_time=5.0,
            push_pull_interval=5.0,
        )
