"""The service's OpenAPI schema, checked in as ``service/openapi.json`` so a platform integrating with the hub
reads the contract without running it. ``python -m service.openapi`` rewrites the file; a test fails when
the code and the checked-in schema disagree, so a change to the API is a visible change to this file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("openapi.json")


def schema() -> dict[str, Any]:
    """The OpenAPI document of the API (built from the routes; no database or settings needed)."""
    from service.app import build_app

    document: dict[str, Any] = build_app(None).openapi()
    return document


def render(document: dict[str, Any]) -> str:
    """The schema as the checked-in file holds it: indented, keys in code order, UTF-8."""
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def main() -> None:
    """Write (default) or check (--check) the checked-in schema."""
    text = render(schema())
    if "--check" in sys.argv[1:]:
        if SCHEMA_FILE.read_text(encoding="utf-8") != text:
            sys.exit(f"{SCHEMA_FILE} is out of date: run python -m service.openapi")
        return
    SCHEMA_FILE.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")


if __name__ == "__main__":
    main()
