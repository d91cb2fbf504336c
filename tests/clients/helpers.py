"""Assertions shared by the command-line tests."""

from __future__ import annotations

from click.testing import Result


def assert_refused(result: Result, exit_code: int, *needles: str) -> str:
    """A clean failure: the exit status, one ``siko: error:`` line naming ``needles``."""
    assert result.exit_code == exit_code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("siko: error: "), result.stderr
    for needle in needles:
        assert needle in lines[-1]
    return lines[-1]
