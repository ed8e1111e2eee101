"""Run every benchmark module in turn (each in its own process so peak memory is per benchmark)."""

from __future__ import annotations

import subprocess
import sys

BENCHES = [
    "bench.generate", "bench.protect", "bench.ingest", "bench.link", "bench.publish", "bench.e2e", "bench.service",
]  # fmt: skip


def main() -> int:
    """Run the benchmarks named on the command line, or all of them."""
    names = sys.argv[1:] or BENCHES
    failed = 0
    for name in names:
        mod = name if name.startswith("bench.") else f"bench.{name}"
        print(f"\n### {mod}", flush=True)
        failed |= subprocess.call([sys.executable, "-m", mod])
    return failed


if __name__ == "__main__":
    sys.exit(main())
