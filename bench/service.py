"""Load test of the front-desk service on loopback: 50 concurrent clients doing lookups by ID card for 30 s.

Prints lookups/s, p50/p95/p99 latency and errors, next to a floor measured in the same run: the same work
(the lookup token, the index read, SET ROLE, the person read, in one transaction) straight through psycopg
with no HTTP, no FastAPI and no audit log. Then counts the run's entries in the audit log: every request must
be there. Targets (issue 10): >= 500 lookups/s, p95 <= 100 ms, 0 errors, every request audited.

Usage: python -m bench.service [--residents 10000] [--clients 50] [--seconds 30] [--floor-seconds 10]
[--workers 1] [--workdir DIR] [--keep-db]. Generation, ingest, linkage and publish run first (not timed) into a
PostgreSQL database the bench creates on 127.0.0.1:5432 (user postgres) and drops at the end. The service is
`hub serve --port 0 --workers N` as its own login (hub_service), on a port the system picks; each client is a front-desk
consumer with its own API key, over one keep-alive HTTP/1.1 connection (a minimal asyncio client, so the load
generator costs little of the 2 cores the server and PostgreSQL share). The rate limit is set out of reach:
this measures the service, not the limiter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
TARGET_RATE, TARGET_P95_MS = 500.0, 100.0


def _percentiles(latencies: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 in milliseconds."""
    if len(latencies) < 2:
        return (latencies[0] * 1000,) * 3 if latencies else (0.0, 0.0, 0.0)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return cuts[49] * 1000, cuts[94] * 1000, cuts[98] * 1000


def _prepare(work: Path, residents: int, env: dict[str, str]) -> None:
    """Generate, ingest, link and publish (not timed), as `hub demo` would, into the bench database."""
    os.environ.update(env)
    from connectors.registry import registry
    from hub.ingest_cli import run_ingest
    from hub.link_cli import run_link
    from hub.publish_cli import run_publish
    from hub.settings import Settings
    from privacy.keyring import init_keyfile
    from simulators.generate import generate
    from simulators.http_server import start_servers

    generate(work / "sim", residents=residents, seed=7)
    init_keyfile(work / "hub" / "keys" / "demo-keyring.json")
    settings = Settings.from_env()
    with start_servers(work / "sim"):
        failed = [r for r in run_ingest(list(registry()), settings) if r.error is not None]
    if failed:
        raise SystemExit(f"ingest failed: {[r.dataset for r in failed]}")
    run_link(settings)
    run_publish(settings, release=False)


def _consumers(n: int) -> list[str]:
    """n front-desk consumers, one API key each (kept in memory only)."""
    from hub.publish_cli import migrated_engine
    from hub.service_cli import consumer_roles
    from hub.settings import Settings
    from service.keys import add_consumer

    settings = Settings.from_env()
    engine = migrated_engine(settings)
    tag = secrets.token_hex(3)
    with engine.begin() as conn:
        keys = [
            add_consumer(conn, f"bench-{tag}-{i}", "hub_front_desk", "bench", consumer_roles(settings))
            for i in range(n)
        ]
    engine.dispose()
    return keys


def _ids(sample: int) -> list[str]:
    """Valid ID numbers of published residents (the synthetic truth), for the clients to look up."""
    import pandas as pd

    from hub.settings import Settings
    from publish.lookup import lookup_token

    settings = Settings.from_env()
    people = pd.read_parquet(settings.sim_data / "truth" / "persons.parquet").dropna(subset=["id_number"])
    people = people.sample(min(sample, len(people)), random_state=5)
    keyring = settings.load_keyring()
    engine = settings.engine()
    with engine.connect() as conn:
        known = {r[0] for r in conn.exec_driver_sql("SELECT lookup_token FROM service.lookup_index")}
    engine.dispose()
    return [i for i in people["id_number"] if lookup_token(i, keyring) in known]


async def _client(host: str, port: int, key: str, ids: list[str], case_no: str, until: float, out: list) -> None:
    """One client: lookups over one keep-alive connection until ``until``; (latency, status) per request."""
    deadline = time.perf_counter() + 30
    while True:  # a worker may log its startup a moment before it listens: retry, bounded
        try:
            reader, writer = await asyncio.open_connection(host, port)
            break
        except ConnectionRefusedError:
            if time.perf_counter() > deadline:
                raise
            await asyncio.sleep(0.05)
    head = (
        f"POST /v1/lookup HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
    )
    n = secrets.randbelow(len(ids))
    try:
        while time.perf_counter() < until:
            body = json.dumps({"id_number": ids[n % len(ids)], "case_no": case_no}).encode()
            n += 1
            started = time.perf_counter()
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
            header = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in header.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            out.append((time.perf_counter() - started, int(header[9:12])))
    finally:
        writer.close()


async def _load(
    url: str, keys: list[str], ids: list[str], case_no: str, seconds: float, server_pid: int
) -> tuple[list[tuple[float, int]], float, float]:
    """(latency, status) of every timed request, and the CPU seconds the server and the machine spent meanwhile."""
    import psutil

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    warm: list[tuple[float, int]] = []  # each key's first use pays its Argon2 check once
    await asyncio.gather(
        *(_client(host, port, k, ids, case_no + "-warm", time.perf_counter() + 0.5, warm) for k in keys)
    )
    out: list[tuple[float, int]] = []

    def server_cpu() -> float:  # the server process and its workers
        parent = psutil.Process(server_pid)
        return sum(sum(p.cpu_times()[:2]) for p in [parent, *parent.children(recursive=True)])

    machine = psutil.cpu_times()
    before = server_cpu()
    until = time.perf_counter() + seconds
    await asyncio.gather(*(_client(host, port, k, ids, case_no, until, out) for k in keys))
    after, busy = server_cpu(), psutil.cpu_times()
    used = sum(busy) - busy.idle - (sum(machine) - machine.idle)
    return out, after - before, used


def _floor(service_url: str, ids: list[str], seconds: float, threads: int) -> list[float]:
    """The same lookup through psycopg (token, index read, SET ROLE, person read), ``threads`` at once."""
    import psycopg
    from sqlalchemy.engine import make_url

    from hub.settings import Settings
    from publish.lookup import lookup_token

    keyring = Settings.from_env().load_keyring()
    dsn = make_url(service_url).set(drivername="postgresql").render_as_string(hide_password=False)
    latencies: list[float] = []
    lock = threading.Lock()
    until = time.perf_counter() + seconds

    def work(offset: int) -> None:
        mine = []
        with psycopg.connect(dsn) as conn:
            n = offset
            while time.perf_counter() < until:
                started = time.perf_counter()
                with conn.transaction():
                    token = lookup_token(ids[n % len(ids)], keyring)
                    row = conn.execute(
                        "SELECT person_key FROM service.lookup_index WHERE lookup_token = %s", (token,)
                    ).fetchone()
                    conn.execute("SELECT set_config('role', 'hub_front_desk', true)")
                    assert row is not None
                    conn.execute(
                        "SELECT person_key, name_masked, id_number_masked, phone_masked, sex, birth_year, ethnicity, "
                        "residence_type, community_code, county_code FROM core.person WHERE person_key = %s",
                        (row[0],),
                    ).fetchone()
                mine.append(time.perf_counter() - started)
                n += 1
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=work, args=(i * 97,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies


def _start_server(workers: int) -> tuple[subprocess.Popen[str], str]:
    """`hub serve --port 0 --workers N` as a child process (the command as shipped); its URL from its log."""
    import re

    command = [
        sys.executable,
        "-c",
        "from hub.cli import main; main()",
        "serve",
        "--port",
        "0",
        "--workers",
        str(workers),
    ]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert server.stderr is not None
    url, started = None, 0
    for line in server.stderr:  # where uvicorn binds, then each worker's startup (it listens right after)
        found = re.search(r"Uvicorn running on (http://\S+)", line)
        url = found.group(1) if found else url
        started += "Application startup complete" in line
        if url and started == workers:
            threading.Thread(target=server.stderr.read, daemon=True).start()  # keep the pipe drained
            return server, url
    raise SystemExit(f"hub serve exited ({server.wait()}) before it listened")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--floor-seconds", type=float, default=10.0)
    parser.add_argument("--floor-threads", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--workers", type=int, default=1, help="hub serve --workers (processes sharing the port)")
    args = parser.parse_args()
    import sqlalchemy as sa

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-service-"))
    name = f"hub_bench_service_{secrets.token_hex(4)}"
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    env = {
        "HUB_HOME": str(work / "hub"), "HUB_SIM_DATA": str(work / "sim"), "HUB_DATABASE_URL": f"{SERVER}/{name}",
        "HUB_SERVICE_DATABASE_URL": f"postgresql+psycopg://hub_service@127.0.0.1:5432/{name}",
        "HUB_SERVICE_RATE_PER_MINUTE": "1000000000", "HUB_SERVICE_RATE_BURST": "1000000",
        "GX_ANALYTICS_ENABLED": "false",
    }  # fmt: skip
    server = None
    try:
        print(f"preparing {args.residents:,} residents in {work} (database {name}) …", flush=True)
        started = time.perf_counter()
        _prepare(work, args.residents, env)
        keys, ids = _consumers(args.clients), _ids(5000)
        print(f"prepared in {time.perf_counter() - started:.0f} s: {len(ids):,} IDs to look up, {len(keys)} consumers")
        server, url = _start_server(args.workers)
        case_no = f"BENCH-{secrets.token_hex(4)}"
        results, server_cpu, machine_cpu = asyncio.run(_load(url, keys, ids, case_no, args.seconds, server.pid))
        server.send_signal(signal.SIGINT)  # as Ctrl+C: the workers finish, their audit writers flush, they exit
        server.wait(timeout=120)
        server = None
        floor = _floor(env["HUB_SERVICE_DATABASE_URL"], ids, args.floor_seconds, args.floor_threads)
        from hub.settings import Settings
        from privacy.audit_log import read_entries

        audited = sum(1 for e in read_entries(Settings.from_env().audit_log) if e.get("case_no") == case_no)
    finally:
        if server is not None:
            server.kill()
        if not args.keep_db:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    latencies = [lat for lat, _ in results]
    errors = sum(1 for _, status in results if status != 200)
    rate = len(results) / args.seconds
    p50, p95, p99 = _percentiles(latencies)
    f50, f95, f99 = _percentiles(floor)
    floor_rate = len(floor) / args.floor_seconds
    print(
        f"\n== service lookups: {args.clients} clients, {args.seconds:.0f} s, loopback HTTP, "
        f"{args.workers} worker(s) =="
    )
    row = "{:<34}{:>11.0f}{:>9.1f}{:>9.1f}{:>9.1f}{:>10,}{:>8}"
    print(f"{'':<34}{'lookups/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'requests':>10}{'errors':>8}")
    print(row.format("service (HTTP, SET ROLE, audit)", rate, p50, p95, p99, len(results), errors))
    print(row.format(f"floor (psycopg, {args.floor_threads} threads)", floor_rate, f50, f95, f99, len(floor), 0))
    print(f"service / floor: {rate / floor_rate:.2f}x of the floor's rate")
    print(
        f"server process CPU: {1000 * server_cpu / max(1, len(results)):.2f} ms per lookup "
        f"({server_cpu / args.seconds:.2f} cores); the whole machine busy {machine_cpu / args.seconds:.2f} of "
        f"{os.cpu_count()} cores (other work on the machine included)"
    )
    print(f"audit log: {audited:,} entries for the run's {len(results):,} requests")
    checks = {
        f"lookups/s >= {TARGET_RATE:.0f}": rate >= TARGET_RATE,
        f"p95 <= {TARGET_P95_MS:.0f} ms": p95 <= TARGET_P95_MS,
        "0 errors": errors == 0,
        "every request audited": audited == len(results),
    }
    for what, ok in checks.items():
        print(f"  {'ok  ' if ok else 'MISS'} {what}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
