"""The source registry: where and when each source dataset is read, checked against the contracts.

`sources.yaml` declares location and schedule; the contract declares the interface kind. The CLI and
the Airflow ingest DAGs are generated from ``load_registry()``, so a dataset is declared once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from connectors.errors import SourceError
from schemas.contract import Contract, ContractError, packaged_contracts

REGISTRY_PATH = Path(__file__).resolve().parent / "sources.yaml"
_KEYS = frozenset(
    {"system", "path", "pattern", "paging", "page_size", "schedule", "partitions", "lag_minutes"}
)
_PAGING = frozenset({"cursor", "offset"})


@dataclass(frozen=True)
class SourceDecl:
    """One registered source dataset: its contract plus location, paging, schedule and partitions."""

    contract: Contract
    system: str
    path: str | None
    pattern: str | None
    paging: str | None
    page_size: int
    schedule: str
    partitions: tuple[str, ...]
    lag: timedelta

    @property
    def dataset(self) -> str:
        """The dataset name (the contract's)."""
        return self.contract.dataset

    @property
    def kind(self) -> str:
        """Connector kind: http, sql or files, from the contract's interface."""
        interface = self.contract.interface
        return "http" if interface.startswith("http") else "sql" if interface == "sql" else "files"


def _decl(dataset: str, raw: Mapping[str, Any], contract: Contract, path: Path) -> SourceDecl:
    unknown = set(raw) - _KEYS
    if unknown:
        raise ContractError(path, f"unknown key(s) {sorted(unknown)}", dataset)
    if "system" not in raw:
        raise ContractError(path, "missing 'system'", dataset)
    kind = contract.interface
    paging = raw.get("paging")
    if kind.startswith("http"):
        if paging not in _PAGING or not raw.get("path"):
            raise ContractError(path, "an HTTP source needs 'path' and 'paging' (cursor or offset)", dataset)
        if (paging == "cursor") != (kind == "http_cursor"):
            raise ContractError(path, f"paging '{paging}' does not fit interface '{kind}'", dataset)
    if kind in {"csv", "xlsx"} and not (raw.get("path") and raw.get("pattern")):
        raise ContractError(path, "a file source needs 'path' and 'pattern'", dataset)
    partitions = raw["partitions"]
    if not isinstance(partitions, list) or not partitions:
        raise ContractError(path, "partitions must be a non-empty list", dataset)
    return SourceDecl(
        contract=contract,
        system=str(raw["system"]),
        path=str(raw["path"]) if raw.get("path") else None,
        pattern=str(raw["pattern"]) if raw.get("pattern") else None,
        paging=str(paging) if paging else None,
        page_size=int(raw["page_size"]),
        schedule=str(raw["schedule"]),
        partitions=tuple(str(p) for p in partitions),
        lag=timedelta(minutes=float(raw["lag_minutes"])),
    )


def load_registry(
    path: Path | str = REGISTRY_PATH, contracts: Mapping[str, Contract] | None = None
) -> dict[str, SourceDecl]:
    """Read the registry; every contract must have exactly one declaration and vice versa."""
    path = Path(path)
    contracts = packaged_contracts() if contracts is None else contracts
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ContractError(path, f"cannot read the source registry: {exc}") from exc
    defaults = dict(raw.get("defaults") or {})
    sources = raw.get("sources") or {}
    missing = sorted(set(contracts) - set(sources))
    if missing:
        raise ContractError(path, f"no registry entry for dataset(s) {missing}")
    decls: dict[str, SourceDecl] = {}
    for dataset, entry in sources.items():
        if dataset not in contracts:
            raise ContractError(path, "registered dataset has no contract", dataset)
        decls[dataset] = _decl(dataset, {**defaults, **(entry or {})}, contracts[dataset], path)
    return dict(sorted(decls.items()))


@cache
def registry() -> dict[str, SourceDecl]:
    """The packaged registry, loaded once per process."""
    return load_registry()


def get_source(dataset: str) -> SourceDecl:
    """One declaration, with an error listing the known datasets."""
    decls = registry()
    if dataset not in decls:
        raise SourceError(dataset, "", f"unknown dataset; known: {', '.join(decls)}")
    return decls[dataset]


@dataclass(frozen=True)
class SystemConfig:
    """What the operator configured for one department system; unset parts fall back to the simulators."""

    system: str
    url: str | None = None  # HTTP base URL, or database URL for a SQL system
    schema: str | None = None
    directory: Path | None = None  # root of a file-drop system
    token: str | None = field(default=None, repr=False)
    airflow_conn: str | None = field(default=None, repr=False)  # an AIRFLOW_CONN_* value; credential inside


@dataclass(frozen=True)
class Locations:
    """Where each department system is for this run, and each system's own credential."""

    http: Mapping[str, str]  # system -> base URL
    tokens: Mapping[str, str]  # system -> bearer token (one credential per system)
    sql: Mapping[str, Mapping[str, Any]]  # dataset -> {"url", "schema", "table"}
    files: Mapping[str, Path]  # system -> root folder the declared paths are under

    def __repr__(self) -> str:  # tokens are credentials: never shown
        return f"Locations(http={dict(self.http)}, sql={sorted(self.sql)}, files={dict(self.files)})"


def locate(sim_data: Path, systems: Mapping[str, SystemConfig] | None = None) -> Locations:
    """Resolve locations: what ``systems`` configures wins over the local simulators (serve.json, manifest)."""
    from connectors.http import parse_airflow_connection
    from connectors.sql import sqlalchemy_url_from_airflow

    systems = systems or {}
    serve: dict[str, Any] = {}
    manifest: dict[str, Any] = {}
    if (sim_data / "serve.json").is_file():
        serve = json.loads((sim_data / "serve.json").read_text(encoding="utf-8"))
    if (sim_data / "manifest.json").is_file():
        manifest = json.loads((sim_data / "manifest.json").read_text(encoding="utf-8"))
    served_tokens = serve.get("tokens") or {}
    http: dict[str, str] = {}
    tokens: dict[str, str] = {}
    sql: dict[str, Mapping[str, Any]] = {}
    files: dict[str, Path] = {}
    for decl in registry().values():
        cfg = systems.get(decl.system) or SystemConfig(decl.system)
        if decl.kind == "http":
            conn = parse_airflow_connection(cfg.airflow_conn) if cfg.airflow_conn else None
            url = cfg.url or (conn.base_url if conn else None) or serve.get(decl.system)
            token = cfg.token or (conn.token if conn else None) or served_tokens.get(decl.system)
            if url:
                http[decl.system] = str(url)
            if token:
                tokens[decl.system] = str(token)
        elif decl.kind == "sql":
            location = (manifest.get("datasets", {}).get(decl.dataset) or {}).get("location")
            db_url = cfg.url or (
                sqlalchemy_url_from_airflow(cfg.airflow_conn).render_as_string(hide_password=False)
                if cfg.airflow_conn
                else None
            )
            if db_url:
                location = {"url": db_url, "schema": cfg.schema, "table": decl.contract.table}
            if location:
                sql[decl.dataset] = location
        else:
            files[decl.system] = cfg.directory or sim_data
    return Locations(http, tokens, sql, files)
