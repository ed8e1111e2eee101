"""`hub simulate` commands: help, clear errors, advance, and `serve` as a real process stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest
import requests
from click.testing import CliRunner

from hub.simulate_cli import simulate
from simulators.generate import generate

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "sim"
    generate(out, residents=300, seed=1)
    return out


def test_generate_shows_progress_and_rows_per_dataset(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    args = ["generate", "--residents", "200", "--seed", "3", "--out", str(out)]
    result = CliRunner().invoke(simulate, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["residents"] == 200 and manifest["seed"] == 3
    for dataset, info in manifest["datasets"].items():
        assert dataset in result.output
        assert f"{info['rows']:,}" in result.output
    assert "total" in result.output and "done" in result.output


def test_help_texts_name_every_command_and_option() -> None:
    runner = CliRunner()
    top = runner.invoke(simulate, ["--help"])
    assert top.exit_code == 0
    for name in ("generate", "serve", "advance"):
        assert name in top.output
    for command, options in {
        "generate": ["--residents", "--seed", "--out", "--sql-url"],
        "serve": ["--data", "--host", "--port", "--renshe-port", "--token", "SIGTERM"],
        "advance": ["--data", "--changed", "--late", "--seed"],
    }.items():
        result = runner.invoke(simulate, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert all(o in result.output for o in options), (command, result.output)


@pytest.mark.parametrize("command", ["serve", "advance"])
def test_a_missing_or_ungenerated_folder_is_named(command: str, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "nowhere"
    result = runner.invoke(simulate, [command, "--data", str(missing)])
    assert result.exit_code != 0
    assert str(missing) in result.output and "generate" in result.output
    result = runner.invoke(simulate, [command, "--data", str(tmp_path)])
    assert result.exit_code != 0
    assert str(tmp_path) in result.output and "manifest.json" in result.output


def test_advance_prints_rows_per_dataset_and_kind(sim_dir: Path) -> None:
    result = CliRunner().invoke(
        simulate, ["advance", "--data", str(sim_dir), "--changed", "0.1", "--late", "0.05", "--seed", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "gongan.hukou" in result.output and "changes_1.parquet" in result.output
    assert "births_" in result.output
    too_much = ["advance", "--data", str(sim_dir), "--changed", "0.9", "--late", "0.2"]
    refused = CliRunner().invoke(simulate, too_much)
    assert refused.exit_code == 2 and "--changed" in refused.output


PRINTED = re.compile(r"^(?:公安 |人社 )?(token gongan|token renshe|gongan|renshe|serve\.json)\s+(\S+)$")
SERVE = [sys.executable, "-c", "from hub.simulate_cli import simulate; simulate()", "serve"]


def _lines(stream: IO[str]) -> queue.Queue[str | None]:
    """The stream's lines as they come, read in a thread; None at its end."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_serve_runs_as_a_process_and_stops_cleanly_on_sigterm(sim_dir: Path) -> None:
    command = [*SERVE, "--data", str(sim_dir), "--port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        printed: dict[str, str] = {}
        assert proc.stdout is not None
        lines = _lines(proc.stdout)
        deadline = time.monotonic() + 60
        while "serve.json" not in printed:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))  # queue.Empty past the deadline
            if line is None:
                break
            match = PRINTED.match(line.strip())
            if match:
                printed[match.group(1)] = match.group(2)
        assert set(printed) == {"gongan", "renshe", "token gongan", "token renshe", "serve.json"}, printed
        served = json.loads(Path(printed["serve.json"]).read_text())
        tokens = {"gongan": printed["token gongan"], "renshe": printed["token renshe"]}
        assert served == {"gongan": printed["gongan"], "renshe": printed["renshe"], "tokens": tokens}
        assert tokens["gongan"] != tokens["renshe"]  # one credential per system
        assert printed["gongan"] != printed["renshe"]  # port 0: the OS gave each server a port of its own
        headers = {"Authorization": f"Bearer {tokens['gongan']}"}
        r = requests.get(printed["gongan"] + "/api/v1/hukou", params={"page_size": 10}, headers=headers, timeout=10)
        assert r.status_code == 200 and len(r.json()["items"]) == 10
        headers = {"Authorization": f"Bearer {tokens['renshe']}"}
        r = requests.get(printed["renshe"] + "/rs/employment", params={"limit": 5}, headers=headers, timeout=10)
        assert r.status_code == 200 and len(r.json()["rows"]) == 5
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.returncode == 0, err
    assert "Stopped." in "".join(iter(lines.get, None)) and "Traceback" not in err
    assert not (sim_dir / "serve.json").exists()


@pytest.mark.parametrize("option", ["--port", "--renshe-port"])
def test_serve_refuses_a_port_in_use_and_names_it(sim_dir: Path, option: str) -> None:
    """Each system's port is its own option (0 = any free one); a taken one is named, nothing is served."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--renshe-port" if option == "--port" else "--port"
        command = [*SERVE, "--data", str(sim_dir), option, str(port), other, "0"]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert str(port) in done.stderr and "Traceback" not in done.stderr
    assert not (sim_dir / "serve.json").exists()
