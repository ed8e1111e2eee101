"""The one settings object: every entry point (CLI, DAGs, benchmarks) reads ``HUB_*`` here and nowhere else.

Stage packages below ``hub/`` receive what they need (paths, engines, keys, credentials) as arguments.
``HUB_HOME`` does not depend on the process's working directory: its default is resolved once, from where
the hub is installed, so an Airflow worker started elsewhere finds the same state.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connectors.registry import SystemConfig, registry
from schemas.base import HubError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from privacy.keyring import Keyring

APP_DIR_NAME = "community-hub"
_SECRET_PARAM = re.compile(r"pass|token|secret|key|credential|auth", re.IGNORECASE)


class SettingsError(HubError):
    """A HUB_* variable has a value the hub cannot use; the message names the variable."""


def systems() -> dict[str, str]:
    """Each registered source system and its interface kind (http, sql, files), from the source registry."""
    return {decl.system: decl.kind for decl in registry().values()}


def default_home() -> tuple[Path, str]:
    """Where the hub keeps its state when HUB_HOME is unset, and why: the checkout's var/ or the user's data dir."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and os.access(checkout, os.W_OK):
        return checkout / "var", "default: var/ of the checkout the hub runs from"
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / APP_DIR_NAME, "default: the user's data folder (installed package)"


class _EnvSettings(BaseSettings):
    """The raw ``HUB_*`` variables as pydantic-settings reads and type-checks them."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore", case_sensitive=False)

    home: Path | None = None
    database_url: str | None = None
    keyring: Path | None = Field(default=None, description="demo keyfile path")
    keyring_json: SecretStr | None = None
    sim_data: Path | None = None
    consumers: Path | None = Field(default=None, description="consumers file (platforms, release consumers)")
    max_quarantine_rate: float = Field(default=0.05, ge=0, le=1)
    quarantine_window_rows: int = Field(default=200, ge=1)
    link_threshold: float = Field(default=0.95, ge=0, le=1)
    link_min_weight: float = -2.0
    service_host: str = "127.0.0.1"
    service_port: int = Field(default=8765, ge=0, le=65535, description="0: let the system pick a free port")
    service_database_url: str | None = None
    service_rate_per_minute: float = Field(default=120, gt=0)
    service_rate_burst: int = Field(default=20, ge=1)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what ``Settings.from_env`` passes in: it hands over the environment (or a test's mapping)."""
        return (init_settings,)

    @field_validator("home", "keyring", "sim_data", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value


def _connect_args(url: sa.engine.URL) -> dict[str, str]:
    """PostgreSQL sessions without JIT compilation: the hub's queries over the conflict views and row-level
    security cost enough to be compiled, which took longer than running them (the worklist's read of
    ``core.cross_check`` at 2.2 M residents: 23.1 s with JIT, 4.1 s without). A URL's own ``options`` win."""
    if url.get_backend_name() != "postgresql" or "options" in url.query:
        return {}
    return {"options": "-c jit=off"}


@dataclass(frozen=True)
class Settings:
    """Resolved settings: absolute paths, the database URL, the keyring source, one entry per source system."""

    home: Path
    database_url: str
    keyring: Path
    keyring_json: SecretStr | None
    sim_data: Path
    consumers: Path
    sources: Mapping[str, SystemConfig]
    max_quarantine_rate: float
    quarantine_window_rows: int
    link_threshold: float
    link_min_weight: float
    origins: Mapping[str, str]  # setting -> where its value came from (for `hub settings`)
    service_host: str = "127.0.0.1"
    service_port: int = 8765
    service_database_url: str = ""  # the service's own login (hub_service); default: HUB_DATABASE_URL
    service_rate_per_minute: float = 120.0  # lookups and reveals per consumer, sustained
    service_rate_burst: int = 20  # ... and at once

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the environment (or ``env``); relative paths are resolved once, here."""
        env = dict(os.environ if env is None else env)
        try:
            raw = _EnvSettings.model_validate(_prefixed(env))
        except ValidationError as exc:
            problems = "; ".join(f"HUB_{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
            raise SettingsError(f"invalid settings: {problems}") from None
        origins: dict[str, str] = {}

        def origin(name: str, value: Any, fallback: str) -> None:
            origins[name] = f"env HUB_{name.upper()}" if value is not None else fallback

        home_default, why = default_home()
        home = (raw.home or home_default).expanduser().resolve()
        origin("home", raw.home, why)
        database_url = raw.database_url or f"sqlite:///{home / 'hub.db'}"
        origin("database_url", raw.database_url, "default: SQLite under HUB_HOME")
        keyring = (raw.keyring or home / "keys" / "demo-keyring.json").expanduser().resolve()
        origin("keyring", raw.keyring, "default: demo keyfile under HUB_HOME")
        origin("keyring_json", raw.keyring_json, "unset: the keyfile is used")
        sim_data = (raw.sim_data or home / "sim").expanduser().resolve()
        origin("sim_data", raw.sim_data, "default: HUB_HOME/sim")
        consumers = (raw.consumers or _packaged("publish", "consumers.yaml")).expanduser().resolve()
        origin("consumers", raw.consumers, "default: the demo consumers file shipped with the hub")
        for name in ("max_quarantine_rate", "quarantine_window_rows", "link_threshold", "link_min_weight"):
            origin(name, env.get(f"HUB_{name.upper()}"), "default")
        for name in ("service_host", "service_port", "service_rate_per_minute", "service_rate_burst"):
            origin(name, env.get(f"HUB_{name.upper()}"), "default")
        origin("service_database_url", raw.service_database_url, "default: HUB_DATABASE_URL")
        sources = {system: _source(system, env, origins) for system in systems()}
        return cls(
            home=home,
            database_url=database_url,
            keyring=keyring,
            keyring_json=raw.keyring_json,
            sim_data=sim_data,
            consumers=consumers,
            sources=sources,
            max_quarantine_rate=raw.max_quarantine_rate,
            quarantine_window_rows=raw.quarantine_window_rows,
            link_threshold=raw.link_threshold,
            link_min_weight=raw.link_min_weight,
            origins=origins,
            service_host=raw.service_host,
            service_port=raw.service_port,
            service_database_url=raw.service_database_url or database_url,
            service_rate_per_minute=raw.service_rate_per_minute,
            service_rate_burst=raw.service_rate_burst,
        )

    def load_keyring(self) -> Keyring:
        """The keyring from the secrets backend's JSON when set, else the demo keyfile."""
        from privacy.keyring import Keyring

        return Keyring.load(self.keyring_json.get_secret_value() if self.keyring_json else None, self.keyring)

    def engine(self) -> sa.Engine:
        """An engine on the hub database (SQLite files get their folder created, 0700)."""
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url

        from schemas.base import private_dir, private_file

        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            private_dir(self.home)
            private_file(url.database)  # it holds link tokens and ID ciphertexts: owner only
        return sa.create_engine(url, connect_args=_connect_args(url))

    def service_engine(self) -> sa.Engine:
        """An engine on the published database as the service's own login (PostgreSQL), pooled for requests."""
        import sqlalchemy as sa
        from sqlalchemy.engine import make_url

        url = make_url(self.service_database_url)
        return sa.create_engine(url, pool_size=20, max_overflow=10, pool_recycle=3600, connect_args=_connect_args(url))

    @property
    def audit_log(self) -> Path:
        """The reveal/quarantine audit log (its head is also kept in the hub database)."""
        return self.home / "audit" / "reveal.log"

    def describe(self) -> list[tuple[str, str, str]]:
        """(setting, value, origin) rows with every secret redacted, for `hub settings`."""
        rows: list[tuple[str, str, str]] = [
            ("HUB_HOME", str(self.home), self.origins["home"]),
            ("HUB_DATABASE_URL", _redact_url(self.database_url), self.origins["database_url"]),
            ("HUB_KEYRING", str(self.keyring), self.origins["keyring"]),
            ("HUB_KEYRING_JSON", "(set, redacted)" if self.keyring_json else "-", self.origins["keyring_json"]),
            ("HUB_SIM_DATA", str(self.sim_data), self.origins["sim_data"]),
            ("HUB_CONSUMERS", str(self.consumers), self.origins["consumers"]),
            ("HUB_MAX_QUARANTINE_RATE", str(self.max_quarantine_rate), self.origins["max_quarantine_rate"]),
            ("HUB_QUARANTINE_WINDOW_ROWS", str(self.quarantine_window_rows), self.origins["quarantine_window_rows"]),
            ("HUB_LINK_THRESHOLD", str(self.link_threshold), self.origins["link_threshold"]),
            ("HUB_LINK_MIN_WEIGHT", str(self.link_min_weight), self.origins["link_min_weight"]),
            ("HUB_SERVICE_HOST", self.service_host, self.origins["service_host"]),
            ("HUB_SERVICE_PORT", str(self.service_port), self.origins["service_port"]),
            (
                "HUB_SERVICE_DATABASE_URL",
                _redact_url(self.service_database_url),
                self.origins["service_database_url"],
            ),
            ("HUB_SERVICE_RATE_PER_MINUTE", str(self.service_rate_per_minute), self.origins["service_rate_per_minute"]),
            ("HUB_SERVICE_RATE_BURST", str(self.service_rate_burst), self.origins["service_rate_burst"]),
        ]
        for system, src in self.sources.items():
            prefix = f"HUB_SOURCE_{system.upper()}"
            if src.url:
                rows.append((f"{prefix}_URL", _redact_url(src.url), self.origins[f"{system}.url"]))
            if src.schema:
                rows.append((f"{prefix}_SCHEMA", src.schema, "env"))
            if src.directory:
                rows.append((f"{prefix}_DIR", str(src.directory), "env"))
            if src.token or systems()[system] == "http":
                token = "(set, redacted)" if src.token else "-"
                rows.append((f"{prefix}_TOKEN", token, self.origins[f"{system}.token"]))
            if src.airflow_conn:
                rows.append((f"AIRFLOW_CONN_HUB_{system.upper()}", "(set, redacted)", "env"))
        return rows


def _packaged(package: str, name: str) -> Path:
    """A data file shipped inside one of the hub's packages (without importing the package's modules)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / name


def _prefixed(env: Mapping[str, str]) -> dict[str, str]:
    """The HUB_* fields of ``env`` as pydantic-settings keyword arguments (so a passed mapping wins over os.environ)."""
    fields = _EnvSettings.model_fields
    out: dict[str, str] = {}
    for name in fields:
        value = env.get(f"HUB_{name.upper()}")
        if value is not None:
            out[name] = value
    return out


def _source(system: str, env: Mapping[str, str], origins: dict[str, str]) -> SystemConfig:
    """One system's location and credential from HUB_SOURCE_<SYSTEM>_* and AIRFLOW_CONN_HUB_<SYSTEM>."""
    prefix = f"HUB_SOURCE_{system.upper()}"
    token = env.get(f"{prefix}_TOKEN") or None
    conn = env.get(f"AIRFLOW_CONN_HUB_{system.upper()}") or None
    origins[f"{system}.url"] = f"env {prefix}_URL"
    origins[f"{system}.token"] = (
        f"env {prefix}_TOKEN" if token else "Airflow connection" if conn else "unset: the simulators' serve.json"
    )
    directory = env.get(f"{prefix}_DIR")
    return SystemConfig(
        system=system,
        url=env.get(f"{prefix}_URL") or None,
        schema=env.get(f"{prefix}_SCHEMA") or None,
        directory=Path(directory).expanduser().resolve() if directory else None,
        token=token,
        airflow_conn=conn,
    )


def _redact_url(url: str) -> str:
    """A database or HTTP URL with any password replaced."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is not None:
        secret = {k: "redacted" for k in parsed.query if _SECRET_PARAM.search(k)}
        return parsed.update_query_dict(secret).render_as_string(hide_password=True)
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = "&".join(f"{k}=redacted" if _SECRET_PARAM.search(k) else f"{k}={v}" for k, v in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
