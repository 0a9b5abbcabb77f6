"""Sans-I/O cores do no I/O and stay below their shells, by the real import graph.

For each core module the checker follows what importing it executes: its
module-level imports, transitively, with relative imports resolved, ``from x
import y`` counted as importing ``x.y`` when that is a module, and every parent
package's ``__init__`` (importing ``a.b.c`` runs ``a`` and ``a.b`` first). It
reports any I/O module (trio, time, socket, os ...) or shell module
(keycafe.node, the client's sync and trio halves) reached that way, with the
chain that reaches it. The core module's own function-level imports count too
(a lazy ``import trio`` is still I/O); other modules' lazy imports are not run
by importing them (keycafe/__init__.py loads the client on first use).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

SRC = Path(__file__).resolve().parent.parent
ROOT = SRC / "keycafe"
CORES = ["resp", "store", "server", "cluster", "gossip"]
# The client's sans-I/O parts (its sync and trio shells do the I/O).
CORE_FILES = ["client/routing.py", "client/commands.py"]
FORBIDDEN_MODULES = frozenset(
    {
        "trio",
        "time",
        "socket",
        "asyncio",
        "select",
        "selectors",
        "os",
        "secrets",
        "datetime",
        "threading",
        "subprocess",
    }
)
SHELLS = ("keycafe.node", "keycafe.client")
CORE_CLIENT = frozenset({"keycafe.client.routing", "keycafe.client.commands"})
# Known exception, not ours to fix here: keycafe/client/__init__.py imports the
# sync and trio clients eagerly, so importing keycafe.client.routing really
# does load trio through its parent package. The edge from the two core client
# modules to that package is not followed; making the package's __init__ lazy
# (as keycafe/__init__.py is) would remove the need.
KNOWN_EDGES = frozenset({(m, "keycafe.client") for m in CORE_CLIENT})


@attrs.frozen(kw_only=True)
class Rules:
    forbidden: frozenset[str]  # top-level modules no core may reach
    shells: tuple[str, ...]  # package prefixes no core may reach ...
    allowed: frozenset[str] = frozenset()  # ... except these modules
    skip_edges: frozenset[tuple[str, str]] = frozenset()  # (importer, imported)
    # (core package, package it must never reach), e.g. gossip below cluster
    below: tuple[tuple[str, str], ...] = ()


def module_file(src: Path, name: str) -> Path | None:
    base = src.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def module_name(src: Path, path: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _statements(tree: ast.AST, lazy: bool) -> Iterator[ast.AST]:
    """Nodes of ``tree``; below a def or lambda only if ``lazy``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if lazy or not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                stack.append(child)


@functools.cache
def imported(src: Path, name: str, lazy: bool = False) -> set[str]:
    """Modules that importing ``name`` imports directly (package-internal ones
    resolved to modules; others by their dotted name)."""
    path = module_file(src, name)
    assert path is not None, name
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in _statements(tree, lazy):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module or ""
            out.add(base)
            for alias in node.names:
                if module_file(src, f"{base}.{alias.name}") is not None:
                    out.add(f"{base}.{alias.name}")  # a submodule, imported too
    return out


def parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def violations(src: Path, start: str, rules: Rules) -> list[str]:
    """What importing ``start`` reaches that ``rules`` forbid, each with its chain."""
    top = start.split(".")[0]
    via: dict[str, str | None] = {start: None}
    todo = [start]
    found: list[str] = []

    def chain(name: str) -> str:
        links = []
        at: str | None = name
        while at is not None:
            links.append(at)
            at = via[at]
        return " -> ".join(reversed(links))

    while todo:
        current = todo.pop()
        edges = imported(src, current, lazy=current == start) | set(parents(current))
        for target in sorted(edges):
            if (current, target) in rules.skip_edges:
                continue
            if target.split(".")[0] != top:
                if target.split(".")[0] in rules.forbidden:
                    found.append(f"{chain(current)} imports {target}")
                continue
            if target in via:
                continue
            via[target] = current
            if target not in rules.allowed and any(
                target == s or target.startswith(s + ".") for s in rules.shells
            ):
                found.append(f"{chain(target)}: a shell module")
            for core, lower in rules.below:
                inside = start == core or start.startswith(core + ".")
                if inside and (target == lower or target.startswith(lower + ".")):
                    found.append(f"{chain(target)}: {core} must not import {lower}")
            if module_file(src, target) is not None:
                todo.append(target)
    return found


RULES = Rules(
    forbidden=FORBIDDEN_MODULES,
    shells=SHELLS,
    allowed=CORE_CLIENT,
    skip_edges=KNOWN_EDGES,
    below=(("keycafe.gossip", "keycafe.cluster"),),
)


def core_files() -> list[Path]:
    files = [p for core in CORES for p in (ROOT / core).rglob("*.py")]
    return sorted(files + [ROOT / f for f in CORE_FILES])


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_does_no_io(path: Path) -> None:
    assert violations(SRC, module_name(SRC, path), RULES) == []
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


def test_the_layering_check_sees_the_cores() -> None:
    assert len(core_files()) >= 15
    assert "keycafe.gossip.core" in {module_name(SRC, p) for p in core_files()}


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_planted_violations(tmp_path: Path) -> None:
    """A fake package with every kind of violation, each hidden a step or two away."""
    _write(
        tmp_path,
        {
            "fake/__init__.py": "",
            "fake/shell/__init__.py": "",
            "fake/shell/links.py": "import trio\n",
            "fake/upper/__init__.py": "",
            "fake/upper/ring.py": "X = 1\n",
            "fake/util.py": "import os.path\n",
            "fake/core/__init__.py": "",
            # relative import of a sibling, which imports the I/O module
            "fake/core/a.py": "from . import b\n",
            "fake/core/b.py": "from fake import util\n",
            # a shell reached through ``from package import submodule``
            "fake/core/c.py": "from ..shell import links\n",
            # a lazy import in the core module itself counts
            "fake/core/d.py": "def f() -> None:\n    import secrets\n",
            # a lower layer importing an upper one
            "fake/core/e.py": "from fake.upper.ring import X\n",
            # a parent package's __init__ runs too
            "fake/dirty/__init__.py": "import datetime\n",
            "fake/dirty/clean.py": "\n",
            # what a core may do
            "fake/core/ok.py": "import math\nfrom fake.core import a as _a\n",
        },
    )
    rules = Rules(
        forbidden=FORBIDDEN_MODULES,
        shells=("fake.shell",),
        below=(("fake.core", "fake.upper"),),
    )
    assert violations(tmp_path, "fake.core.a", rules) == [
        "fake.core.a -> fake.core.b -> fake.util imports os.path"
    ]
    found = violations(tmp_path, "fake.core.c", rules)
    assert "fake.core.c -> fake.shell.links: a shell module" in found
    assert "fake.core.c -> fake.shell.links imports trio" in found
    assert violations(tmp_path, "fake.core.d", rules) == ["fake.core.d imports secrets"]
    found = violations(tmp_path, "fake.core.e", rules)
    assert "fake.core.e -> fake.upper.ring: fake.core must not import fake.upper" in found
    assert violations(tmp_path, "fake.dirty.clean", rules) == [
        "fake.dirty.clean -> fake.dirty imports datetime"
    ]
    # ok.py reaches os through a: the chain says how.
    assert violations(tmp_path, "fake.core.ok", rules) == [
        "fake.core.ok -> fake.core.a -> fake.core.b -> fake.util imports os.path"
    ]
    # A skipped edge is not followed.
    skipping = attrs.evolve(rules, skip_edges=frozenset({("fake.core.b", "fake.util")}))
    assert violations(tmp_path, "fake.core.a", skipping) == []
