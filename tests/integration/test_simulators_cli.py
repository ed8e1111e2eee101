"""`hub simulate` commands: help, clear errors, advance, and `serve` as a real process stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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
        "serve": ["--data", "--host", "--port", "--token", "SIGTERM"],
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


def test_serve_runs_as_a_process_and_stops_cleanly_on_sigterm(sim_dir: Path) -> None:
    entry = "from hub.simulate_cli import simulate; simulate()"
    command = [sys.executable, "-c", entry, "serve", "--data", str(sim_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        printed: dict[str, str] = {}
        deadline = time.monotonic() + 60
        assert proc.stdout is not None
        while "serve.json" not in printed and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            match = re.match(r"^(?:\S+ )?(gongan|renshe|token|serve\.json)\s+(\S+)$", line.strip())
            if match:
                printed[match.group(1)] = match.group(2)
        assert set(printed) == {"gongan", "renshe", "token", "serve.json"}, printed
        served = json.loads(Path(printed["serve.json"]).read_text())
        assert served == {"gongan": printed["gongan"], "renshe": printed["renshe"], "token": printed["token"]}
        r = requests.get(
            printed["gongan"] + "/api/v1/hukou",
            params={"page_size": 10},
            headers={"Authorization": f"Bearer {printed['token']}"},
            timeout=10,
        )
        assert r.status_code == 200 and len(r.json()["items"]) == 10
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Stopped." in out and "Traceback" not in err
    assert not (sim_dir / "serve.json").exists()
