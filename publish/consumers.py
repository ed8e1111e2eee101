"""The consumers file: community platforms (a role each, scoped to communities) and release consumers.

``sync_consumers`` makes the database match the file: platform roles exist and belong to the platform
group, and ``core.consumer_scope`` lists every role's communities ('*' for the city-wide roles). Roles are
PostgreSQL's; on SQLite only the scope table is written (the service reads it there).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa
import yaml

from schemas.base import HubError
from schemas.bulk import qualified, write_arrow
from schemas.unified import BACK_OFFICE, FRONT_DESK, JUSTICE, PLATFORMS, PRIVACY_OFFICER, table

CONSUMERS_FILE = Path(__file__).with_name("consumers.yaml")
KINDS = ("platform", "release")
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,40}$")
_CODE = re.compile(r"^([0-9]{6}|[0-9]{12})$")
#: roles that read every community (the city's own staff)
CITY_WIDE = (FRONT_DESK, BACK_OFFICE, PRIVACY_OFFICER, JUSTICE)


class ConsumersError(HubError):
    """The consumers file is wrong; the message names the file and the entry."""


@dataclass(frozen=True)
class Consumer:
    """One consumer: a community platform with its scope, or a release consumer with its token domain."""

    name: str
    label: str
    kind: str
    scope: tuple[str, ...] = ()

    @property
    def role(self) -> str:
        """The database role of a platform."""
        return f"{PLATFORMS}_{self.name}"

    @property
    def token_domain(self) -> str:
        """The key domain of a release consumer's person tokens."""
        return f"release_{self.name}"


def load_consumers(path: Path | None = None) -> list[Consumer]:
    """Parse and check the consumers file (default: the packaged demo file)."""
    path = path or CONSUMERS_FILE
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConsumersError(f"{path}: cannot read: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != 1 or not isinstance(raw.get("consumers"), list):
        raise ConsumersError(f"{path}: expected 'format: 1' and a 'consumers' list")
    out: list[Consumer] = []
    for i, entry in enumerate(raw["consumers"], start=1):
        where = f"{path}: consumer {i}"
        if not isinstance(entry, dict):
            raise ConsumersError(f"{where}: expected a mapping")
        name, kind = str(entry.get("name", "")), entry.get("kind")
        if not _NAME.match(name):
            raise ConsumersError(f"{where}: name '{name}' must be lower_snake_case, 2-41 characters")
        if kind not in KINDS:
            raise ConsumersError(f"{where} ({name}): kind must be one of {', '.join(KINDS)}")
        scope = tuple(str(c) for c in entry.get("scope") or ())
        bad = [c for c in scope if not _CODE.match(c)]
        if bad:
            raise ConsumersError(f"{where} ({name}): scope codes must be 6 or 12 digits, not {', '.join(bad)}")
        if kind == "platform" and not scope:
            raise ConsumersError(f"{where} ({name}): a platform needs a scope (county or community codes)")
        if any(c.name == name for c in out):
            raise ConsumersError(f"{where}: name '{name}' appears twice")
        out.append(Consumer(name, str(entry.get("label") or name), str(kind), scope))
    return out


def sync_consumers(conn: sa.Connection, consumers: list[Consumer]) -> None:
    """Create missing platform roles (PostgreSQL) and rewrite the scope table to match the file."""
    platforms = [c for c in consumers if c.kind == "platform"]
    if conn.dialect.name == "postgresql":
        for c in platforms:
            conn.exec_driver_sql(
                f"DO $$ BEGIN CREATE ROLE {c.role} LOGIN IN ROLE {PLATFORMS}; "
                "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
            )
            conn.exec_driver_sql(f"GRANT {PLATFORMS} TO {c.role}")
    scope = table("core.consumer_scope")
    conn.exec_driver_sql(f"DELETE FROM {qualified(conn, scope)}")
    rows = [(role, "*") for role in CITY_WIDE] + [(c.role, code) for c in platforms for code in c.scope]
    write_arrow(
        conn,
        scope,
        pa.table({"role_name": [r for r, _ in rows], "community_code": [code for _, code in rows]}),
    )
