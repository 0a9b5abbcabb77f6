"""One client connection's state, and the dispatch of its requests."""

from __future__ import annotations

import logging
from binascii import crc_hqx
from typing import Final

import attrs

from keycafe.cluster.slot_table import CROSSSLOT
from keycafe.resp import reply as resp
from keycafe.server.registry import COMMANDS, CommandError, CommandSpec
from keycafe.server.state import ServerState
from keycafe.store.engine import Store
from keycafe.store.keyslot import key_slot

log = logging.getLogger("keycafe.server")

NOAUTH: Final = b"-NOAUTH Authentication required.\r\n"
# The slot is between owners here (ServerState.moving): clients retry shortly.
TRYAGAIN: Final = b"-TRYAGAIN Slot is moving; try again shortly\r\n"


@attrs.define(eq=False)
class Session:
    """A client's connection state; ``execute`` runs one request."""

    state: ServerState
    store: Store  # state.store, one attribute hop closer for the hot commands
    client_id: int
    addr: str = ""
    laddr: str = ""
    name: bytes = b""
    lib_name: bytes = b""
    lib_ver: bytes = b""
    proto: int = 2
    authenticated: bool = True
    asking: bool = False
    readonly: bool = False
    # Set by QUIT: the shell sends what is queued, then closes.
    closing: bool = False
    created_ms: int = 0

    @classmethod
    def open(cls, state: ServerState, addr: str = "", laddr: str = "") -> Session:
        session = cls(
            state=state,
            store=state.store,
            client_id=state.new_client_id(),
            addr=addr,
            laddr=laddr,
            authenticated=not state.config.requirepass,
            created_ms=state.now_ms,
        )
        state.clients[session.client_id] = session
        return session

    def close(self) -> None:
        self.state.clients.pop(self.client_id, None)

    def execute(self, req: list[bytes]) -> bytes:
        """Run one request; return its encoded reply (errors are replies too).

        This runs once per command: every lookup here is paid millions of times
        a second under load, hence the inlined checks.
        """
        if self.closing:
            return b""  # pipelined after QUIT: Redis does not run these
        spec = COMMANDS.get(req[0]) or COMMANDS.get(req[0].lower())
        if spec is None:
            return self._error(_unknown_command(req))
        n = len(req)
        arity = spec.arity
        if n != arity and (arity > 0 or n < -arity):
            return self._error(f"ERR wrong number of arguments for '{spec.name}' command")
        if not self.authenticated and not spec.no_auth:
            self.state.counters.error_replies += 1
            return NOAUTH
        slot = -1
        first = spec.first_key
        if first:
            if spec.single_key:
                key = req[first]
                # key_slot without the call when there is no hashtag to honour.
                slot = key_slot(key) if b"{" in key else crc_hqx(key, 0) & 16383
            else:
                slot = _common_slot(spec, req)
                if slot < 0:
                    self.state.counters.error_replies += 1
                    return CROSSSLOT
            table = self.state.table
            if not table.mine[slot]:
                self.state.counters.error_replies += 1
                if self.state.moving[slot]:
                    return TRYAGAIN
                return table.redirect(slot)
        try:
            return spec.handler(self, req, slot)
        except CommandError as exc:
            return self._error(str(exc))
        except Exception:
            # A bug must cost one reply, not the node or the connection.
            log.exception("command %r failed", spec.name)
            return self._error("ERR internal error, see the server log")

    def _error(self, message: str) -> bytes:
        self.state.counters.error_replies += 1
        return resp.error(message)


def _common_slot(spec: CommandSpec, req: list[bytes]) -> int:
    """The slot all keys of ``req`` share, or -1 (CROSSSLOT)."""
    last = spec.last_key if spec.last_key >= 0 else len(req) + spec.last_key
    slot = key_slot(req[spec.first_key])
    for i in range(spec.first_key + spec.step, last + 1, spec.step):
        if key_slot(req[i]) != slot:
            return -1
    return slot


def _unknown_command(req: list[bytes]) -> str:
    # Redis: "ERR unknown command 'x', with args beginning with: 'a' 'b' "
    name = req[0][:128].decode(errors="replace")
    args = "".join(f"'{a[:128].decode(errors='replace')}' " for a in req[1:])
    return f"ERR unknown command '{name}', with args beginning with: {args}"
