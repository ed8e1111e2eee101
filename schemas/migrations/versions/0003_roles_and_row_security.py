"""Database roles, grants and row-level security of the published tiers (PostgreSQL; SQLite has no roles).

- Fixed roles: front desk, back office, privacy officer, justice, statistics, the corrections readers, and
  the group every community platform's role joins (platform roles come from the consumers file).
- Grants follow each table's ``info["readers"]`` in ``schemas.unified``; ``statistics`` gets ``release`` only.
- Row-level security on every table with a ``community_code``: a role reads the rows of the communities
  ``core.consumer_scope`` lists for it: a community code, its county's code, or '*' for all. Roles are
  cluster-wide, so creating one that exists is not an error, and dropping one that another database still
  uses is left to the DBA.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

from schemas.unified import CORRECTIONS_READER, FIXED_ROLES, JUSTICE, PLATFORMS, STATISTICS, TIERS, published_tables

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCOPE = "core.consumer_scope"
# a scope row applies to the roles the reading user acts with: its own, or one it inherits (an operator's
# login granted the back office's role); the subqueries do not depend on the row, so each runs once
MINE = "pg_has_role(current_user, {alias}.role_name, 'USAGE')"


def _create_role(name: str, login: bool) -> None:
    option = "LOGIN" if login else "NOLOGIN"
    op.execute(
        f"DO $$ BEGIN CREATE ROLE {name} {option}; "
        "EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    )


def _scoped_tables() -> list[str]:
    return [
        t.fullname
        for t in published_tables()
        if "community_code" in t.c and t.schema != "release" and t.fullname != SCOPE  # the scope has its own policy
    ]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for role in FIXED_ROLES:
        # the group roles cannot log in; the others can where the server's pg_hba and a password allow
        _create_role(role, login=role not in (PLATFORMS, CORRECTIONS_READER))
    op.execute(f"GRANT {CORRECTIONS_READER} TO {JUSTICE}")
    for tier in TIERS:
        op.execute(f"REVOKE ALL ON SCHEMA {tier} FROM PUBLIC")
    readers_of_schema: dict[str, set[str]] = {tier: set() for tier in TIERS}
    for table in published_tables():
        readers = set(table.info["readers"])
        readers_of_schema[str(table.schema)] |= readers
        op.execute(f"GRANT SELECT ON {table.fullname} TO {', '.join(sorted(readers))}")
    readers_of_schema["core"] |= {JUSTICE, CORRECTIONS_READER}  # corrections rows name persons of core
    readers_of_schema["core"].discard(STATISTICS)
    op.execute(f"GRANT SELECT ON core.person, core.record_lineage TO {JUSTICE}")
    for tier, roles in readers_of_schema.items():
        op.execute(f"GRANT USAGE ON SCHEMA {tier} TO {', '.join(sorted(roles))}")
    # every role reads its own scope rows (the policies below look them up as the reading role)
    op.execute(f"GRANT SELECT ON {SCOPE} TO {', '.join(sorted(set(FIXED_ROLES)))}")
    op.execute(f"ALTER TABLE {SCOPE} ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY own_scope ON {SCOPE} FOR SELECT USING ({MINE.format(alias=SCOPE)})")
    for name in _scoped_tables():
        nullable = " community_code IS NULL OR" if name == "core.change_log" else ""
        # a change-log row shows only to a role that may read its table: a platform must not learn that a
        # person of its community has a disability or corrections record from the feed
        # (the schema first: asking about a table in a schema the role may not use is an error)
        rights = (
            " CASE WHEN has_schema_privilege(current_user, split_part(table_name, '.', 1), 'USAGE')"
            " THEN has_table_privilege(current_user, table_name, 'SELECT') ELSE false END AND ("
            if name == "core.change_log"
            else ""
        )
        op.execute(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY community_scope ON {name} FOR SELECT USING ({rights}{nullable} community_code IN "
            f"(SELECT s.community_code FROM {SCOPE} s WHERE {MINE.format(alias='s')}) OR left(community_code, 6) IN "
            f"(SELECT s.community_code FROM {SCOPE} s WHERE {MINE.format(alias='s')}) OR EXISTS "
            f"(SELECT 1 FROM {SCOPE} s WHERE {MINE.format(alias='s')} AND s.community_code = '*'))"
            + (")" if rights else "")
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in [*_scoped_tables(), SCOPE]:
        policy = "own_scope" if name == SCOPE else "community_scope"
        op.execute(f"DROP POLICY IF EXISTS {policy} ON {name}")
        op.execute(f"ALTER TABLE {name} DISABLE ROW LEVEL SECURITY")
    roles = ", ".join(FIXED_ROLES)
    for tier in TIERS:
        op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {tier} FROM {roles}")
        op.execute(f"REVOKE ALL ON SCHEMA {tier} FROM {roles}")
    for role in FIXED_ROLES:  # a role another hub database still uses stays (roles are cluster-wide)
        op.execute(
            f"DO $$ BEGIN DROP ROLE IF EXISTS {role}; "
            "EXCEPTION WHEN dependent_objects_still_exist OR object_in_use THEN NULL; END $$"
        )
