"""One composition root: only hub/ reads the environment, nothing below imports hub, one HubError, one
atomic write, and settings that do not depend on the working directory."""

from __future__ import annotations

import ast
import inspect
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import connectors.errors
import privacy.keyring
import schemas.quarantine
from hub.settings import Settings, SettingsError
from schemas.base import HubError, write_atomic

ROOT = Path(__file__).resolve().parents[2]
STAGE_PACKAGES = ("connectors", "schemas", "privacy", "linkage", "publish", "simulators", "service")


def _modules() -> list[Path]:
    return [p for pkg in STAGE_PACKAGES if (ROOT / pkg).is_dir() for p in sorted((ROOT / pkg).rglob("*.py"))]


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that touch os.environ / os.getenv / os.putenv."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            if node.attr in {"environ", "getenv", "putenv", "unsetenv"}:
                lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in {"environ", "getenv"} for a in node.names):
                lines.append(node.lineno)
    return sorted(lines)


def _hub_imports(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "hub" or a.name.startswith("hub.") for a in node.names):
            lines.append(node.lineno)
        module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
        if module == "hub" or module.startswith("hub."):
            lines.append(node.lineno)
    return sorted(lines)


def test_no_stage_package_reads_the_environment_or_imports_hub() -> None:
    modules = _modules()
    assert len(modules) > 20
    env_reads = {}
    hub_imports = {}
    for path in modules:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if lines := _environment_reads(tree):
            env_reads[str(path.relative_to(ROOT))] = lines
        if lines := _hub_imports(tree):
            hub_imports[str(path.relative_to(ROOT))] = lines
    assert env_reads == {}
    assert hub_imports == {}


def test_the_scanner_finds_what_it_looks_for() -> None:
    tree = ast.parse("import os\nfrom hub.settings import Settings\nx = os.environ.get('A')\ny = os.getenv('B')\n")
    assert _environment_reads(tree) == [3, 4] and _hub_imports(tree) == [2]


@pytest.mark.parametrize(
    "error",
    [connectors.errors.SourceError, connectors.errors.StateError, privacy.keyring.KeyringError,
     schemas.quarantine.QuarantineError, SettingsError],
)  # fmt: skip
def test_errors_derive_from_one_hub_error(error: type[Exception]) -> None:
    assert issubclass(error, HubError)


def test_every_error_class_in_the_stage_packages_is_a_hub_error() -> None:
    import importlib

    offenders = []
    migrations = ROOT / "schemas" / "migrations"  # Alembic loads these scripts itself, inside a migration
    for path in (p for p in _modules() if migrations not in p.parents):
        module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        module = importlib.import_module(module_name)
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module_name and issubclass(obj, Exception) and not issubclass(obj, HubError):
                offenders.append(f"{module_name}.{name}")
    # control-flow signals that never leave their module are allowed, by name
    allowed = {"connectors.http._Retryable", "connectors.http.PageShapeError", "connectors.files.RejectFile",
               "connectors.files.UndecodableBytes",
               "simulators.http_server.BadRequest"}  # fmt: skip
    assert sorted(set(offenders) - allowed) == []


def test_home_does_not_depend_on_the_working_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    seen = []
    for cwd in (tmp_path, ROOT / "docs"):
        out = subprocess.run(
            [sys.executable, "-c", "from hub.settings import Settings; print(Settings.from_env().home)"],
            cwd=cwd, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        seen.append(out.stdout.strip())
    assert seen[0] == seen[1] == str(ROOT / "var")


def test_one_credential_per_source_system() -> None:
    settings = Settings.from_env(
        {"HUB_SOURCE_GONGAN_TOKEN": "token-of-gongan", "HUB_SOURCE_RENSHE_TOKEN": "token-of-renshe"}
    )
    assert settings.sources["gongan"].token == "token-of-gongan"
    assert settings.sources["renshe"].token == "token-of-renshe"
    assert set(settings.sources) == {"gongan", "renshe", "sifa", "minzheng", "jisheng", "canlian"}
    assert "token-of" not in repr(settings.sources)


def test_locations_give_each_system_its_own_token(tmp_path: Path) -> None:
    from connectors.registry import locate

    settings = Settings.from_env({"HUB_SOURCE_GONGAN_TOKEN": "g-token", "HUB_SOURCE_RENSHE_URL": "http://127.0.0.1:9"})
    (tmp_path / "serve.json").write_text('{"gongan": "http://127.0.0.1:8", "tokens": {"renshe": "r-token"}}')
    where = locate(tmp_path, settings.sources)
    assert dict(where.tokens) == {"gongan": "g-token", "renshe": "r-token"}
    assert dict(where.http) == {"gongan": "http://127.0.0.1:8", "renshe": "http://127.0.0.1:9"}
    assert "token" not in repr(where)


def test_hub_settings_shows_every_setting_and_redacts_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from hub.cli import cli

    monkeypatch.setenv("HUB_SOURCE_RENSHE_TOKEN", "very-secret-token")
    monkeypatch.setenv("HUB_DATABASE_URL", "postgresql+psycopg://hub:db-password@127.0.0.1/hub")
    monkeypatch.setenv("HUB_KEYRING_JSON", '{"format": 1, "secret": "key-material"}')
    out = CliRunner().invoke(cli, ["settings"])
    assert out.exit_code == 0, out.output
    for secret in ("very-secret-token", "db-password", "key-material"):
        assert secret not in out.output
    for name in ("HUB_HOME", "HUB_DATABASE_URL", "HUB_KEYRING_JSON", "HUB_SOURCE_RENSHE_TOKEN"):
        assert name in out.output
    assert "env HUB_SOURCE_RENSHE_TOKEN" in out.output and "(set, redacted)" in out.output


def test_a_bad_setting_is_named() -> None:
    with pytest.raises(SettingsError, match="HUB_MAX_QUARANTINE_RATE"):
        Settings.from_env({"HUB_MAX_QUARANTINE_RATE": "lots"})


def test_write_atomic_is_private_durable_and_all_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new" / "report.json"
    write_atomic(target, "first")
    assert target.read_text() == "first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    write_atomic(target, b"second")
    assert target.read_text() == "second"
    with pytest.raises(FileExistsError):
        write_atomic(target, "third", exclusive=True)
    assert target.read_text() == "second"

    class Boom(Exception):
        pass

    class Exploding(bytes):
        pass

    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise Boom

    os.fsync = failing_fsync  # a crash mid-write must leave the old content and no temp file
    try:
        with pytest.raises(Boom):
            write_atomic(target, "fourth")
    finally:
        os.fsync = real_fsync
    assert target.read_text() == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]
    write_atomic(tmp_path / "shared.txt", "x", mode=0o644)
    assert stat.S_IMODE((tmp_path / "shared.txt").stat().st_mode) == 0o644


def test_secrets_in_url_queries_are_redacted_too() -> None:
    from hub.settings import _redact_url

    assert _redact_url("postgresql://u@h/db?password=s3cret&sslmode=require").count("s3cret") == 0
    assert "sslmode=require" in _redact_url("postgresql://u@h/db?password=s3cret&sslmode=require")
    assert "xyz" not in _redact_url("https://h/api?access_token=xyz&page=1")
    assert "page=1" in _redact_url("https://h/api?access_token=xyz&page=1")
    assert "pw" not in _redact_url("postgresql+psycopg://a:pw@h:5432/db")


def test_the_hub_database_and_home_are_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    engine = Settings.from_env({"HUB_HOME": str(home)}).engine()
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    engine.dispose()
    assert stat.S_IMODE((home / "hub.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
