"""One settings object, read from the environment, so every entry point configures the same way."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    """Where the hub keeps its state and which database it publishes to."""

    home: Path
    database_url: str
    keyring: str
    sim_data: Path

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Read ``HUB_*`` variables; defaults put everything under ``./var`` with SQLite."""
        env = dict(os.environ if env is None else env)
        home = Path(env.get("HUB_HOME", "var")).resolve()
        return cls(
            home=home,
            database_url=env.get("HUB_DATABASE_URL", f"sqlite:///{home / 'hub.db'}"),
            keyring=env.get("HUB_KEYRING", str(home / "keys" / "demo-keyring.json")),
            sim_data=Path(env.get("HUB_SIM_DATA", str(home / "sim"))).resolve(),
        )
