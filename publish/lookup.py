"""The front desk's lookup index: the token of each ID number under the service's own key domain -> person.

The published tables carry no reusable ID token, so a lookup by ID card is computed server-side: the
service takes the typed ID number, computes ``lookup_token`` (HMAC-SHA256 under HKDF ``token/lookup/vN``,
a domain of its own that neither linkage nor any release shares) and reads this index. The index lives in
the ``service`` schema, which no consumer role may read (only the service's own login, ``hub_service``),
and it is kept out of the change log. ``refresh_lookup`` keeps it in step with the identity index after each
publish: one row per ``link_identity`` row (keyed by its link token), the lookup token computed once, when the
row first appears (the ID's AES-SIV ciphertext under ``linkage_id`` is decrypted here inside the trusted zone,
never written or logged). PostgreSQL only: the service needs its roles.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pyarrow as pa
import sqlalchemy as sa

from linkage import store as identity
from linkage.resolve import survivors
from privacy.keyring import Keyring
from privacy.operators import decrypt_series, token_series, token_value
from privacy.policy import LINKAGE_ID_DOMAIN
from publish.consumers import Consumer
from schemas.bulk import copy_into, qualified, read_arrow, write_arrow
from schemas.id_number import is_valid, normalise_text, upgrade_15
from schemas.unified import BACK_OFFICE, FRONT_DESK, JUSTICE, PRIVACY_OFFICER, key

log = logging.getLogger(__name__)

LOOKUP_DOMAIN = "lookup"
SERVICE_SCHEMA = "service"
SERVICE_ROLE = "hub_service"
#: the city-wide roles the service may act as (platform roles are added from the consumers file)
SERVICE_ACTS_AS = (FRONT_DESK, BACK_OFFICE, PRIVACY_OFFICER, JUSTICE)

metadata = sa.MetaData(naming_convention={"pk": "pk_%(table_name)s", "ix": "ix_%(table_name)s_%(column_0_name)s"})

lookup_index = sa.Table(
    "lookup_index",
    metadata,
    sa.Column("lookup_token", key(64), nullable=False, index=True, comment="身份证号的查询令牌（服务专用密钥域）"),
    sa.Column("person_key", key(32), nullable=False, comment="人员键"),
    sa.Column("key_version", sa.Integer, nullable=False, comment="令牌的密钥版本"),
    sa.Column("link_token", key(64), primary_key=True, comment="身份索引的关联令牌（对应 link_identity 的一行）"),
    schema=SERVICE_SCHEMA,
    comment="前台按身份证查询的索引（仅服务自身可读，不进入变更日志）",
)


def normalised_id(text: str) -> str | None:
    """The typed ID number as conform makes it (full-width folded, separators dropped, X upper-cased, 15
    digits upgraded to 18), or None when it is not a valid resident ID number."""
    value = normalise_text(text)
    if value is not None and len(value) == 15 and value.isdigit():
        value = upgrade_15(value)
    return value if value is not None and is_valid(value) else None


def lookup_token(id_number: str, keyring: Keyring, version: int | None = None) -> str:
    """The lookup token of one normalised ID number (``token/lookup/vN``)."""
    return token_value(id_number, keyring, LOOKUP_DOMAIN, version)


def refresh_lookup(engine: sa.Engine, keyring: Keyring) -> dict[str, int]:
    """Make the lookup index follow the identity index (one transaction, only the difference); counts only.

    The identity index only grows (link inserts rows; a person changes only by a merge, in ``link_person``),
    so: index rows whose lookup token is under an older key version are deleted; identity rows not indexed
    yet get their lookup token (the only IDs decrypted); rows of merged persons move to the survivor. Should
    the index hold more rows than the identity index (rebuilt from scratch), the extra rows are deleted.
    """
    if engine.dialect.name != "postgresql":
        return {}
    active = keyring.active_version
    with engine.begin() as conn:
        ident, index = qualified(conn, identity.link_identity), qualified(conn, lookup_index)
        merged = conn.exec_driver_sql(
            f"SELECT person_key, merged_into FROM {qualified(conn, identity.link_person)} WHERE merged_into IS NOT NULL"
        ).all()
        lead = survivors([(a, b) for a, b in merged])
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE _lookup_lead (person_key text PRIMARY KEY, survivor text) ON COMMIT DROP"
        )
        copy_into(conn, "_lookup_lead", pa.table({"person_key": list(lead), "survivor": list(lead.values())}))
        conn.exec_driver_sql("ANALYZE _lookup_lead")
        deleted = conn.exec_driver_sql(f"DELETE FROM {index} WHERE key_version <> %s", (active,)).rowcount
        was_empty = conn.exec_driver_sql(f"SELECT NOT EXISTS (SELECT 1 FROM {index})").scalar_one()
        todo = read_arrow(
            conn,
            f"SELECT i.link_token, coalesce(ld.survivor, i.person_key) AS person_key, i.id_ciphertext FROM {ident} i "
            f"LEFT JOIN _lookup_lead ld ON ld.person_key = i.person_key WHERE i.id_ciphertext IS NOT NULL "
            f"AND NOT EXISTS (SELECT 1 FROM {index} l WHERE l.link_token = i.link_token)",
            ["link_token", "person_key", "id_ciphertext"],
        )
        if todo.num_rows:
            ids = decrypt_series(todo.column("id_ciphertext").to_pandas().astype("string"), keyring, LINKAGE_ID_DOMAIN)
            tokens = token_series(ids, keyring, LOOKUP_DOMAIN).to_numpy()
            del ids  # plaintext IDs live only for the token computation
            rows = pa.table(
                {
                    "link_token": todo.column("link_token"),
                    "lookup_token": pa.array(tokens, pa.string()),
                    "person_key": todo.column("person_key"),
                    "key_version": pa.array([active] * todo.num_rows, pa.int32()),
                }
            )
            write_arrow(conn, lookup_index, rows, empty=bool(was_empty))
        moved = 0
        if lead and not was_empty:  # a full build wrote every row's survivor already
            moved = conn.exec_driver_sql(
                f"UPDATE {index} l SET person_key = ld.survivor FROM {ident} i JOIN _lookup_lead ld "
                "ON ld.person_key = i.person_key WHERE l.link_token = i.link_token AND l.person_key <> ld.survivor"
            ).rowcount
        total = conn.exec_driver_sql(f"SELECT count(*) FROM {index}").scalar_one()
        wanted = conn.exec_driver_sql(f"SELECT count(*) FROM {ident} WHERE id_ciphertext IS NOT NULL").scalar_one()
        if total != wanted:  # every identity row is indexed now, so any difference is index rows to drop
            deleted += conn.exec_driver_sql(
                f"DELETE FROM {index} l WHERE NOT EXISTS "
                f"(SELECT 1 FROM {ident} i WHERE i.link_token = l.link_token AND i.id_ciphertext IS NOT NULL)"
            ).rowcount
            total = wanted
    counts = {"rows": int(total), "written": todo.num_rows, "moved": int(moved), "deleted": int(deleted)}
    log.info("lookup index: %(rows)d rows, %(written)d computed, %(moved)d moved, %(deleted)d deleted", counts)
    return counts


def grant_service_roles(conn: sa.Connection, consumers: Sequence[Consumer]) -> None:
    """Let the service's login act as every consumer role (SET ROLE); it inherits none of their rights."""
    if conn.dialect.name != "postgresql":
        return
    roles = [*SERVICE_ACTS_AS, *(c.role for c in consumers if c.kind == "platform")]
    conn.exec_driver_sql(f"GRANT {', '.join(roles)} TO {SERVICE_ROLE}")
