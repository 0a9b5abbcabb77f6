"""The command layer's error, importable by every module without a cycle."""

from __future__ import annotations

from keycafe.errors import KeycafeError


class CommandError(KeycafeError):
    """A command failed; ``str(exc)`` is the error reply text (``ERR ...``)."""
