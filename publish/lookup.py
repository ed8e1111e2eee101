"""The front desk's lookup index: the token of each ID number under the service's own key domain -> person.

The published tables carry no reusable ID token, so a lookup by ID card is computed server-side: the
service takes the typed ID number, computes ``lookup_token`` (HMAC-SHA256 under HKDF ``token/lookup/vN``,
a domain of its own that neither linkage nor any release shares) and reads this index. The index lives in
the ``service`` schema, which no consumer role may read (only the service's own login, ``hub_service``),
and it is kept out of the change log. ``refresh_lookup`` rebuilds it after each publish from the identity
index (``link_identity``: the ID's AES-SIV ciphertext under ``linkage_id``, decrypted here inside the trusted
zone, never written or logged), writing only the difference. PostgreSQL only: the service needs its roles.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from linkage import store as identity
from linkage.resolve import survivors
from privacy.keyring import Keyring
from privacy.operators import decrypt_series, token_series, token_value
from privacy.policy import LINKAGE_ID_DOMAIN
from publish.consumers import Consumer
from schemas.bulk import delete_keys, read_arrow, upsert_arrow
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
    sa.Column("lookup_token", key(64), primary_key=True, comment="身份证号的查询令牌（服务专用密钥域）"),
    sa.Column("person_key", key(32), nullable=False, comment="人员键"),
    sa.Column("key_version", sa.Integer, nullable=False, comment="令牌的密钥版本"),
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


def _wanted(conn: sa.Connection, keyring: Keyring) -> pd.DataFrame:
    """(lookup_token, person_key, key_version) of every ID the identity index holds, merges followed."""
    index = identity.read_table(conn, identity.link_identity, ["person_key", "id_ciphertext"])
    index = index[index["id_ciphertext"].notna()]
    merged = identity.read_table(conn, identity.link_person, ["person_key", "merged_into"])
    merged = merged[merged["merged_into"].notna()]
    lead = survivors(list(zip(merged["person_key"], merged["merged_into"], strict=True)))
    ids = decrypt_series(index["id_ciphertext"].astype("string"), keyring, LINKAGE_ID_DOMAIN)
    frame = pd.DataFrame(
        {
            "lookup_token": token_series(ids, keyring, LOOKUP_DOMAIN).to_numpy(),
            "person_key": index["person_key"].map(lambda k: lead.get(k, k)).to_numpy(),
        }
    )
    del ids  # plaintext IDs live only for the token computation
    frame["key_version"] = keyring.active_version
    return frame.drop_duplicates("lookup_token").reset_index(drop=True)


def refresh_lookup(engine: sa.Engine, keyring: Keyring) -> dict[str, int]:
    """Make the lookup index match the identity index (one transaction, only the difference); counts only."""
    if engine.dialect.name != "postgresql":
        return {}
    with engine.begin() as conn:
        wanted = _wanted(conn, keyring)
        old = read_arrow(
            conn, "SELECT lookup_token, person_key FROM service.lookup_index", ["lookup_token", "person_key"]
        )
        have = old.to_pandas() if old.num_rows else pd.DataFrame({"lookup_token": [], "person_key": []}, dtype="string")
        both = wanted.merge(have, on="lookup_token", how="outer", suffixes=("", "_old"), indicator=True)
        write = both[
            (both["_merge"] == "left_only")
            | ((both["_merge"] == "both") & (both["person_key"] != both["person_key_old"]))
        ]
        gone = both[both["_merge"] == "right_only"]
        upsert_arrow(
            conn,
            lookup_index,
            pa.Table.from_pandas(write[["lookup_token", "person_key", "key_version"]], preserve_index=False),
        )
        delete_keys(conn, lookup_index, pa.table({"lookup_token": gone["lookup_token"].astype(str).tolist()}))
    counts = {"rows": len(wanted), "written": len(write), "deleted": len(gone)}
    log.info("lookup index: %(rows)d IDs, %(written)d written, %(deleted)d deleted", counts)
    return counts


def grant_service_roles(conn: sa.Connection, consumers: Sequence[Consumer]) -> None:
    """Let the service's login act as every consumer role (SET ROLE); it inherits none of their rights."""
    if conn.dialect.name != "postgresql":
        return
    roles = [*SERVICE_ACTS_AS, *(c.role for c in consumers if c.kind == "platform")]
    conn.exec_driver_sql(f"GRANT {', '.join(roles)} TO {SERVICE_ROLE}")
