"""keys/ does no I/O: no module in it imports a network, event-loop or server library.

import-linter enforces the same rule (pyproject.toml); this test keeps it in the suite.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_IN_KEYS = {"asyncio", "socket", "aiohttp", "redis", "hub", "clients", "click", "http"}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "keys").rglob("*.py")), ids=lambda p: p.name)
def test_keys_module_imports_no_io_library(path: Path) -> None:
    assert imported_roots(path) & FORBIDDEN_IN_KEYS == set()


PACKAGE_MODULES = sorted(
    p for pkg in ("keys", "hub", "clients") for p in (ROOT / pkg).rglob("*.py")
)


@pytest.mark.parametrize("path", PACKAGE_MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_suites_imports_the_cryptographic_libraries(path: Path) -> None:
    """Primitives sit behind one door (keys/_suites.py); everything else uses recipes."""
    uses_primitives = bool(imported_roots(path) & {"cryptography", "nacl"})
    assert uses_primitives == (path.name == "_suites.py")


def test_clients_never_import_hub() -> None:
    for path in (ROOT / "clients").rglob("*.py"):
        assert "hub" not in imported_roots(path), path
