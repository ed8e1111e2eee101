"""The front desk's lookup index follows the identity index incrementally (PostgreSQL, real migrations).

Each refresh computes lookup tokens only for identity rows it has not indexed, moves merged persons to their
survivor, recomputes everything after a key rotation and drops rows the identity index no longer has.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest
import sqlalchemy as sa

from linkage import store
from privacy.keyring import Keyring
from privacy.operators import encrypt_series, token_series
from privacy.policy import LINKAGE_DOMAIN, LINKAGE_ID_DOMAIN
from publish.lookup import lookup_token, refresh_lookup
from schemas.id_number import check_character
from schemas.migrate import upgrade

# synthetic resident ID numbers (呼伦贝尔 area codes, valid check characters); nobody's
IDS = [f"{body}{check_character(body)}" for body in (f"15070219{80 + i:02d}0101{100 + i:03d}" for i in range(6))]


@pytest.fixture
def engine(fresh_pg_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(fresh_pg_url)
    upgrade(engine, "head")
    store.create(engine)
    yield engine
    engine.dispose()


def _add_identities(engine: sa.Engine, keyring: Keyring, ids: list[str], persons: list[str]) -> None:
    values = pd.Series(ids, dtype="string")
    rows = pd.DataFrame(
        {
            "link_token": token_series(values, keyring, LINKAGE_DOMAIN).to_numpy(),
            "person_key": persons,
            "key_version": keyring.active_version,
            "id_ciphertext": encrypt_series(values, keyring, LINKAGE_ID_DOMAIN).to_numpy(),
        }
    )
    with engine.begin() as conn:
        store.write_rows(conn, store.link_person, pd.DataFrame({"person_key": persons, "created_run": 1}))
        store.write_rows(conn, store.link_identity, rows)


def _found(engine: sa.Engine, keyring: Keyring) -> dict[str, list[str]]:
    """ID number -> the person keys its lookup token finds."""
    with engine.connect() as conn:
        index = conn.exec_driver_sql("SELECT lookup_token, person_key FROM service.lookup_index").all()
    return {i: sorted(p for t, p in index if t == lookup_token(i, keyring)) for i in IDS}


def test_the_lookup_index_is_refreshed_by_difference(engine: sa.Engine) -> None:
    keyring = Keyring.generate()
    persons = [f"p{i:031d}" for i in range(len(IDS))]
    _add_identities(engine, keyring, IDS[:4], persons[:4])

    assert refresh_lookup(engine, keyring) == {"rows": 4, "written": 4, "moved": 0, "deleted": 0}
    assert _found(engine, keyring) == {
        **{i: [p] for i, p in zip(IDS[:4], persons, strict=False)},
        IDS[4]: [],
        IDS[5]: [],
    }
    assert refresh_lookup(engine, keyring) == {"rows": 4, "written": 0, "moved": 0, "deleted": 0}

    # two new identity rows; person 1 merged into person 0, then person 0 into person 2 (a chain)
    _add_identities(engine, keyring, IDS[4:], persons[4:])
    with engine.begin() as conn:
        conn.execute(
            sa.update(store.link_person)
            .where(store.link_person.c.person_key == persons[1])
            .values(merged_into=persons[0])
        )
        conn.execute(
            sa.update(store.link_person)
            .where(store.link_person.c.person_key == persons[0])
            .values(merged_into=persons[2])
        )
    assert refresh_lookup(engine, keyring) == {"rows": 6, "written": 2, "moved": 2, "deleted": 0}
    found = _found(engine, keyring)
    assert found[IDS[0]] == found[IDS[1]] == found[IDS[2]] == [persons[2]]
    assert found[IDS[5]] == [persons[5]]

    # a key rotation: every lookup token is recomputed under the new version
    rotated = keyring.rotated()
    assert refresh_lookup(engine, rotated) == {"rows": 6, "written": 6, "moved": 0, "deleted": 6}
    assert _found(engine, rotated)[IDS[3]] == [persons[3]]
    assert _found(engine, keyring)[IDS[3]] == []  # the old version's token finds nobody now

    # an identity index rebuilt without a row: its index row goes
    with engine.begin() as conn:
        conn.execute(sa.delete(store.link_identity).where(store.link_identity.c.person_key == persons[3]))
    assert refresh_lookup(engine, rotated) == {"rows": 5, "written": 0, "moved": 0, "deleted": 1}
    assert _found(engine, rotated)[IDS[3]] == []
