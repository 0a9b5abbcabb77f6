"""Sans-I/O cores import no trio, read no clock and use no global random."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "keycafe"
CORES = ["resp", "store", "server", "cluster", "gossip"]
# The client's sans-I/O parts (its sync and trio shells do the I/O).
CORE_FILES = ["client/routing.py", "client/commands.py"]
FORBIDDEN_MODULES = {"trio", "time", "socket", "asyncio", "select", "selectors"}


def core_files() -> list[Path]:
    files = [p for core in CORES for p in (ROOT / core).rglob("*.py")]
    return sorted(files + [ROOT / f for f in CORE_FILES])


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        # Randomness is injected: naming the random.Random type is fine, the
        # module's global generator (random.random(), random.choice ...) is not.
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "random"
        ):
            assert node.attr == "Random", f"{path.name} uses the global random.{node.attr}"
        if isinstance(node, ast.ImportFrom) and node.module == "random":
            names = {alias.name for alias in node.names}
            assert names <= {"Random"}, f"{path.name} imports {names} from random"
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
        assert "keycafe.node" not in names, f"{path.name} imports the shell"


def test_the_layering_check_sees_the_cores() -> None:
    assert len(core_files()) >= 15
