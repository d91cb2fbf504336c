"""Fixtures of the command-line tests: run ``siko`` in this process, as a user would."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from clients.cli import root

Siko = Callable[..., Result]


@pytest.fixture(scope="session")
def siko() -> Siko:
    """``siko(*args, input=..., env=...)`` runs the root command and returns its Result."""
    runner = CliRunner()

    def run(
        *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None
    ) -> Result:
        return runner.invoke(root, list(args), input=input, env=env, prog_name="siko")

    return run
