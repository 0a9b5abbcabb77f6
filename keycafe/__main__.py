"""``python -m keycafe``: start a node."""

from __future__ import annotations

from keycafe.tools.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
