"""The source registry: where and when each source dataset is read, checked against the contracts.

`sources.yaml` declares location and schedule; the contract declares the interface kind. The CLI and
the Airflow ingest DAGs are generated from ``load_registry()``, so a dataset is declared once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
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
class Locations:
    """Where each department system is for this run (from the environment, else the local simulators)."""

    http: Mapping[str, str]  # system -> base URL
    token: str | None
    sql: Mapping[str, Mapping[str, Any]]  # dataset -> {"url", "schema", "table"}
    files: Mapping[str, Path]  # system -> root folder the declared paths are under

    def __repr__(self) -> str:  # the token is a credential: never shown
        return f"Locations(http={dict(self.http)}, sql={sorted(self.sql)}, files={dict(self.files)})"


def locate(sim_data: Path, env: Mapping[str, str] | None = None) -> Locations:
    """Resolve locations: ``HUB_SOURCE_<SYSTEM>_URL`` / ``_DIR`` and ``HUB_SOURCE_TOKEN`` win over the simulators."""
    env = os.environ if env is None else env
    serve: dict[str, Any] = {}
    manifest: dict[str, Any] = {}
    if (sim_data / "serve.json").is_file():
        serve = json.loads((sim_data / "serve.json").read_text(encoding="utf-8"))
    if (sim_data / "manifest.json").is_file():
        manifest = json.loads((sim_data / "manifest.json").read_text(encoding="utf-8"))
    http: dict[str, str] = {}
    sql: dict[str, Mapping[str, Any]] = {}
    files: dict[str, Path] = {}
    for decl in registry().values():
        key = f"HUB_SOURCE_{decl.system.upper()}"
        if decl.kind == "http":
            url = env.get(f"{key}_URL") or serve.get(decl.system)
            if url:
                http[decl.system] = str(url)
        elif decl.kind == "sql":
            location = (manifest.get("datasets", {}).get(decl.dataset) or {}).get("location")
            if env.get(f"{key}_URL"):
                location = {
                    "url": env[f"{key}_URL"],
                    "schema": env.get(f"{key}_SCHEMA"),
                    "table": decl.contract.table,
                }
            if location:
                sql[decl.dataset] = location
        else:
            files[decl.system] = Path(env.get(f"{key}_DIR") or sim_data)
    return Locations(http, env.get("HUB_SOURCE_TOKEN") or serve.get("token"), sql, files)
