"""``siko demo`` run as a person runs it: a child process, its output read as text.

The demo starts its own hub and Redis, so these tests need no fixture of the suite;
what they check besides the narration is that nothing is left running afterwards (no
hub, no redis-server whose command line names the demo's folder) on success, on
Ctrl-C and SIGTERM, and when the hub cannot start.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

#: Every run of the demo must end within this; the whole file stays well under 60 s.
RUN_TIMEOUT_S = 45.0


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "clients.cli", "demo", *args]


def demo_env(tmp_path: Path) -> dict[str, str]:
    """The demo's temporary folder inside ``tmp_path``; a SIKO_REDIS_URL it must ignore."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIKO_")}
    env["TMPDIR"] = str(tmp_path)
    # Were it passed on, the hub would wait for this Redis that does not exist.
    env["SIKO_REDIS_URL"] = f"unix://{tmp_path}/no-redis-here.sock"
    return env


def command_lines() -> dict[int, str]:
    """Every live process's command line, by pid (Linux /proc)."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:  # ended meanwhile
            continue
        found[int(entry.name)] = line.decode(errors="replace")
    return found


def processes_naming(folder: Path) -> list[str]:
    """Command lines of live processes that name ``folder`` (the demo's hub and Redis)."""
    return [line for line in command_lines().values() if str(folder) in line]


def working_folder(output: str) -> Path:
    return Path(output.split("Working in ", 1)[1].split(". ", 1)[0])


def test_the_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        demo_command("--pace", "0"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=demo_env(tmp_path),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    out = result.stdout
    flat = " ".join(out.split())  # the narration wraps at 88 columns
    for line in (
        "ready after",
        "registered pp-duisburg as an agency",
        "registered sta-essen as an agency",
        "registered stadt-essen-ordnungsamt as an agency",
        "registered ldi-nrw as an auditor",
        "sta-essen read",
        "the hub's receipt is signed with the log key and verifies",
        "refused: sta-essen may not post in channel fall-essen-altendorf",
        "from pp-duisburg (key",
        "markings: VS-NfD, handling H1, TLP:AMBER; case PP-DU 4711/25",
        "from stadt-essen-ordnungsamt (key",
        "markings: OFFEN, handling H0, TLP:GREEN; case PP-DU 4711/25",
        "text: Vehicle check at 02:10 on Altendorfer Strasse",
        "its read position in fall-essen-altendorf is now",
        "read by: sta-essen, stadt-essen-ordnungsamt",
        "not yet read by: pp-duisburg",
        "Audit of log demo.siko.invalid/siko-log: leaves 0..",
        "note-accepted             2",
        "note-acknowledged         2",
        "Refused requests: 1",
        "Result: no anomaly found.",
        "The hub is stopped (exit status 0) and so is its Redis.",
        "The temporary folder is removed again",
    ):
        assert " ".join(line.split()) in flat, f"missing {line!r} in:\n{out}"
    assert "Traceback" not in out
    folder = working_folder(flat)
    assert folder.parent == tmp_path.resolve()
    assert not folder.exists()
    assert processes_naming(tmp_path) == []


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_demo_stops_the_hub_and_its_redis(
    tmp_path: Path, how: signal.Signals
) -> None:
    folder = tmp_path / "demo"
    with subprocess.Popen(
        demo_command("--pace", "0.5", "--dir", str(folder)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=demo_env(tmp_path),
    ) as process:
        try:
            assert process.stdout is not None
            seen = []
            for line in process.stdout:
                seen.append(line)
                if "ready after" in line:
                    break
            assert processes_naming(folder / "hub-data"), "the hub should be running now"
            process.send_signal(how)
            out, err = process.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 130, "".join(seen) + out + err
    assert err.strip() == "siko demo: interrupted; the hub and its Redis are stopped."
    assert "Result: no anomaly found." not in out
    assert processes_naming(folder) == []
    assert (folder / "hub-data" / "redis").is_dir()  # --dir keeps the files


def test_a_hub_that_cannot_start_fails_clearly_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "demo"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            demo_command("--pace", "0", "--dir", str(folder), "--port", str(port)),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            env=demo_env(tmp_path),
            check=False,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("siko: error: demo failed: the hub exited (status 1) before")
    assert "address already in use" in lines[0].lower()
    assert lines[0].endswith("the hub and its Redis are stopped")
    assert "Traceback" not in result.stdout
    assert "registered" not in result.stdout
    assert processes_naming(folder) == []


def test_a_folder_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    (tmp_path / "case-files.txt").write_text("keep me", encoding="utf-8")
    result = subprocess.run(
        demo_command("--dir", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=demo_env(tmp_path),
        check=False,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"siko: error: {tmp_path}: not empty; choose a new or empty folder"
    )
    assert result.stdout == ""
    assert [p.name for p in tmp_path.iterdir()] == ["case-files.txt"]


def test_a_hub_that_dies_midway_fails_the_demo_clearly(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    with subprocess.Popen(
        demo_command("--pace", "0.5", "--dir", str(folder)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=demo_env(tmp_path),
    ) as process:
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if "ready after" in line:
                    break
            hubs = [
                pid
                for pid, line in command_lines().items()
                if " -m hub " in line and str(folder) in line
            ]
            assert len(hubs) == 1
            os.kill(hubs[0], signal.SIGKILL)  # the demo's own hub, as a crash would
            out, err = process.communicate(timeout=RUN_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 1, out + err
    line = err.strip()
    assert line.startswith("siko: error: demo failed: "), err
    assert "the hub exited (status -9) during the demo; its log ends: " in line
    assert line.endswith("the hub and its Redis are stopped")
    assert "Traceback" not in out + err
    assert "Result: no anomaly found." not in out
    assert processes_naming(folder) == []
