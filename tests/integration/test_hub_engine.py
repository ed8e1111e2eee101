"""The hub's own PostgreSQL sessions (pipeline and service): JIT off, unless the database URL says otherwise."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url

from hub.settings import Settings


def _jit(url: str, tmp_path: Path) -> list[str]:
    settings = Settings.from_env({"HUB_HOME": str(tmp_path), "HUB_DATABASE_URL": url})
    found = []
    for engine in (settings.engine(), settings.service_engine()):
        with engine.connect() as conn:
            found.append(str(conn.exec_driver_sql("SHOW jit").scalar()))
        engine.dispose()
    return found


def test_the_hubs_postgresql_sessions_run_without_jit(pg_url: str, tmp_path: Path) -> None:
    """PostgreSQL compiled the plans of the conflict views under row-level security for longer than they ran (the
    worklist's read at 2.2 M residents: 23.1 s with JIT, 4.1 s without); a URL's own ``options`` still win."""
    assert _jit(pg_url, tmp_path) == ["off", "off"]
    own = make_url(pg_url).update_query_dict({"options": "-c jit=on"})
    assert _jit(own.render_as_string(hide_password=False), tmp_path) == ["on", "on"]
