"""The benchmarks still run end to end: each script's tiniest mode, as a user runs it.

Their figures are not checked (they depend on the machine); a script that no longer
starts, or that breaks on a changed hub or keys API, fails here instead of on the next
benchmark day.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("script", "mode"), [("bench/hub.py", "--tiny"), ("bench/audit.py", "--quick")]
)
def test_benchmark_runs_and_reports_its_goals(script: str, mode: str) -> None:
    done = subprocess.run(
        [sys.executable, script, mode], cwd=ROOT, capture_output=True, text=True, timeout=140
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("**Goal:") == 2, done.stdout
    if script == "bench/hub.py":  # and what the goals leave the hub on this machine
        assert "**floor: the bare endpoint's work + the required checks**" in done.stdout
        assert "posting at the floor and moving the bytes raw need" in done.stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["bench/seal.py", "--quick"], ["seal < 1,000 µs", "open < 200 µs"]),
        (
            ["bench/audit_verify.py", "--leaves", "1000", "--runs", "1"],
            ["| refusals |", "| mix |", "| notes |"],
        ),
    ],
    ids=["seal", "audit_verify"],
)
def test_the_other_benchmarks_run_and_report_every_case(
    command: list[str], expected: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in expected:
        assert line in done.stdout, done.stdout[-3000:]
