#!/usr/bin/env python3
"""Benchmark safehold's PostgreSQL source against plain pg_dump and pg_dump | restic.

One run: start a private PostgreSQL 15 server (as root: initdb through `runuser -u
postgres`, 127.0.0.1 on a random port plus a private unix socket, fsync=off), generate a
"small SaaS" database (users, orders, order_items, events; or pgbench's tables), then,
every command with its input in the page cache:

1. day 1: `pg_dump -Fc -f FILE`, a safehold plan backup, `pg_dump -Fc -Z0 | restic backup
   --stdin` (and `pg_dump -Fc | restic backup --stdin`);
2. day 2: change ~2% of the rows (update 2%, insert 1%, delete 0.5%), run every column
   again; report what each one added to its storage;
3. restore the day-2 state into new databases: `pg_restore -j N` of the plain dump file,
   `safehold restore --source db --into URL`, `restic dump | pg_restore -j N`; every restored
   database must have the source's row count in every table.

Prints a Markdown table (phases x columns) and writes every raw number to `--out`.
The measuring helpers (GNU time peak RSS, wait4 CPU, page-cache warming, sizes) come from
bench/run.py. See bench/README.md ("PostgreSQL benchmark") for what the numbers mean.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import run as harness
from run import MB, BenchError, Measurement, fmt, log_tail, say, table_row, tree_bytes, warm

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SAFEHOLD = REPO_ROOT / ".venv" / "bin" / "safehold"
DB = "shop"
DB_USER = "bench"
DB_PASSWORD = "bench-db-password-not-a-secret"
DUMP_NAME = "db.pgdump"
SMOKE_SIZE_MB = 30
SMOKE_TIMEOUT = 60.0
DEFAULT_TIMEOUT = 4 * 3600.0
#: pg_database_size bytes per generated order (with its users, items, events and indexes)
#: on top of an empty database's; measured on PostgreSQL 15, turns --size-mb into rows.
BYTES_PER_ORDER = 2100
EMPTY_DB_BYTES = 7_500_000
#: Day-2 churn, as fractions of each table's rows.
UPDATE_FRACTION, INSERT_FRACTION, DELETE_FRACTION = 0.02, 0.01, 0.005
#: With --churn recent, updates and deletes hit only the newest rows (this fraction).
RECENT_WINDOW = 0.10

COLUMNS = {
    "pg_dump": "pg_dump -Fc → file",
    "safehold": "safehold",
    "restic": "pg_dump -Z0 \\| restic",  # "\\|": a literal pipe inside a Markdown table
    "restic_fc": "pg_dump -Fc \\| restic",
}
PHASES = {
    "day1": "day 1: first dump / backup",
    "day2": "day 2: after the churn",
    "restore": "restore into a new DB",
}


# --------------------------------------------------------------------------
# The private PostgreSQL server
# --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pg_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin with initdb (what safehold's pg_dump uses too)."""
    found = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        if path.parent.name.isdigit() and (path / "initdb").exists():
            found.append((int(path.parent.name), path))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def proc_cpu_ticks(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime+stime, cutime+cstime) of a process, in clock ticks."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


class PgServer:
    """A throwaway PostgreSQL cluster under ``root``; stopped by ``stop()`` (idempotent)."""

    host = "127.0.0.1"

    def __init__(self, root: Path, bin_dir: Path, port: int) -> None:
        self.root = root
        self.bin_dir = bin_dir
        self.port = port
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.log = root / "log" / "server.log"
        self.as_postgres = os.geteuid() == 0
        self.started = False

    def tool(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _run_as_owner(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        if self.as_postgres:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        # cwd=/: runuser'd tools warn when they cannot enter root's working directory
        return subprocess.run(argv, cwd="/", capture_output=True, text=True, check=False)

    def start(self) -> None:
        if self.as_postgres:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "postgres"], check=True)
        for folder in (self.data, self.socket_dir, self.log.parent):
            folder.mkdir(parents=True)
            if self.as_postgres:
                shutil.chown(folder, "postgres", "postgres")
        initdb = self._run_as_owner(
            [self.tool("initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
             "--locale=C.UTF-8"]
        )  # fmt: skip
        if initdb.returncode != 0:
            raise BenchError(
                f"initdb failed (the postgres user must be able to enter {self.root}): "
                f"{initdb.stderr.strip()}"
            )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 50\nshared_buffers = 256MB\nmaintenance_work_mem = 256MB\n"
                "max_wal_size = 8GB\ncheckpoint_timeout = 1h\n"
                # no background vacuum in the middle of a timed command; the harness
                # vacuums explicitly (untimed) after generating and after the churn
                "autovacuum = off\n"
            )
        self.started = True
        start = self._run_as_owner(
            [self.tool("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
             "-t", "120", "start"]
        )  # fmt: skip
        if start.returncode != 0:
            try:
                tail = self.log.read_text(errors="replace")[-4000:]
            except OSError:
                tail = "(no server log)"
            raise BenchError(f"pg_ctl start failed: {start.stderr.strip()}\n{tail}")
        self.psql(f"CREATE ROLE {DB_USER} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'")

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        stop = self._run_as_owner(
            [self.tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "30",
             "stop"]
        )  # fmt: skip
        if stop.returncode == 0:
            return
        pid = self.postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and proc_cpu_ticks(pid) is not None:
                time.sleep(0.1)
            if proc_cpu_ticks(pid) is not None:
                os.kill(pid, signal.SIGKILL)

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        return None

    def psql(self, sql: str, db: str = "postgres", timeout: float | None = None) -> str:
        """Run SQL as the superuser over the unix socket; unaligned, tuples-only output."""
        try:
            result = subprocess.run(
                [self.tool("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                 "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "-d", db],
                input=sql, cwd="/", capture_output=True, text=True, check=False, timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BenchError(f"psql timed out after {timeout:.0f} s: {sql[:200]}") from None
        if result.returncode != 0:
            raise BenchError(f"psql failed: {result.stderr.strip()[-2000:]}")
        return result.stdout

    def url(self, db: str) -> str:
        return f"postgresql://{DB_USER}:{DB_PASSWORD}@{self.host}:{self.port}/{db}"

    def client_env(self) -> dict[str, str]:
        """libpq variables for pg_dump/pg_restore/createdb: TCP + password, like safehold."""
        return {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": DB_USER,
                "PGPASSWORD": DB_PASSWORD}  # fmt: skip

    def cpu_seconds(self) -> float:
        """CPU the whole cluster has used so far: the postmaster, its live children, and
        the backends it has reaped (their time lands in the postmaster's cutime/cstime).

        Waits (up to 5 s) until the benchmark user's backends have exited and been reaped,
        and re-reads when the postmaster reaped a child between its own line and the scan
        of its children, which would otherwise drop that child's time."""
        pid = self.postmaster_pid()
        if pid is None:
            return 0.0
        deadline = time.monotonic() + 5
        while True:
            first = proc_cpu_ticks(pid)
            if first is None:
                return 0.0
            children, busy = 0, False
            for entry in os.scandir("/proc"):
                if not entry.name.isdigit():
                    continue
                child = proc_cpu_ticks(int(entry.name))
                if child is None or child[0] != pid:
                    continue
                children += child[1]
                with contextlib.suppress(OSError):
                    cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                    busy = busy or cmdline.startswith(f"postgres: {DB_USER} ".encode())
            if proc_cpu_ticks(pid) == first and (not busy or time.monotonic() > deadline):
                return (first[1] + first[2] + children) / os.sysconf("SC_CLK_TCK")
            time.sleep(0.02)

    def database_size(self, db: str = DB) -> int:
        return int(self.psql(f"SELECT pg_database_size('{db}')").strip())

    def tables(self, db: str = DB) -> list[str]:
        out = self.psql(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            db=db,
        )
        return out.split()

    def row_counts(self, db: str = DB) -> dict[str, int]:
        tables = self.tables(db)
        if not tables:
            return {}
        query = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in tables)
        counts = {}
        for line in self.psql(query, db=db).splitlines():
            name, _, value = line.rpartition("|")
            counts[name] = int(value)
        return dict(sorted(counts.items()))

    def settle(self) -> None:
        """Before a timed command: flush PostgreSQL's dirty buffers, then the OS's."""
        self.psql("CHECKPOINT")
        os.sync()

    def warm(self) -> None:
        warm([self.data / "base", self.data / "global"])


# --------------------------------------------------------------------------
# The generated database
# --------------------------------------------------------------------------


def lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def pick(values: Sequence[str]) -> str:
    """SQL for a uniformly random element of ``values``, evaluated per row."""
    items = ",".join(lit(v) for v in values)
    return f"(ARRAY[{items}])[1 + floor(random() * {len(values)})::int]"


FIRST = ("Emma", "Liam", "Olivia", "Noah", "Ava", "Elijah", "Sophia", "Lucas", "Mia", "Mateo",
         "Amelia", "Levi", "Harper", "Hiro", "Chloé", "Zoë", "Ana", "Jonas", "Inès", "Ravi",
         "Mei", "Omar", "Sara", "Yuki", "Lena", "Tomás", "Aisha", "Finn", "Kai")  # fmt: skip
LAST = ("Smith", "Müller", "García", "Rossi", "Novak", "Kim", "Nguyen", "Silva", "Cohen",
        "Jensen", "Dubois", "Kowalski", "Sato", "Okafor", "Larsen", "Fischer", "Moreau",
        "Popescu", "Horvat", "Tanaka", "Haddad", "Olsen", "Costa", "Brennan")  # fmt: skip
DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "proton.me", "icloud.com", "fastmail.com",
           "hey.com", "web.de", "orange.fr", "acme-corp.example")  # fmt: skip
PLANS = ("free", "free", "free", "free", "starter", "starter", "pro", "business")
COUNTRIES = ("US", "US", "US", "GB", "DE", "FR", "NL", "ES", "IT", "CA", "AU", "SE", "PL", "JP")
CITIES = ("Springfield", "Portland", "Austin", "London", "Berlin", "Lyon", "Utrecht", "Madrid",
          "Milan", "Toronto", "Sydney", "Malmö", "Kraków", "Osaka", "Denver", "Leeds")  # fmt: skip
STREETS = ("Main St", "Oak Avenue", "Station Road", "Hauptstraße 2", "Rue de la Paix",
           "Kerkstraat", "Calle Mayor", "Via Roma", "King St W", "George Street", "Elm Drive",
           "Birch Lane", "High Street", "Market Square", "Mill Road")  # fmt: skip
LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "nl-NL", "es-ES", "it-IT", "ja-JP", "pl-PL")
TIMEZONES = ("America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London",
             "Europe/Berlin", "Europe/Paris", "Asia/Tokyo", "Australia/Sydney")  # fmt: skip
STATUSES = ("delivered",) * 10 + ("shipped", "shipped", "paid", "pending", "cancelled",
                                  "refunded")  # fmt: skip
CURRENCIES = ("USD", "USD", "USD", "EUR", "EUR", "GBP", "CAD", "AUD", "JPY")
NOTES = ("Please leave the parcel at the back door.", "Gift - no invoice in the box, please.",
         "Ring twice, the bell is broken.", "Deliver after 5pm on weekdays.",
         "Call me when you are outside: the building has no lift.",
         "Customer asked to combine with the previous order.",
         "Fragile! Double box it please.", "Leave with the neighbour at number 12 if I'm out.",
         "Company purchase - VAT number on file.", "Replacement for a damaged item.")  # fmt: skip
ADJECTIVES = ("Classic", "Organic", "Wireless", "Vintage", "Ergonomic", "Compact", "Deluxe",
              "Recycled", "Handmade", "Smart", "Waterproof", "Minimalist")  # fmt: skip
NOUNS = ("Mug", "Backpack", "Desk Lamp", "T-Shirt", "Notebook", "Headphones", "Water Bottle",
         "Sneakers", "Phone Case", "Candle", "Plant Pot", "Keyboard", "Blanket", "Sunglasses",
         "Watch Strap")  # fmt: skip
COLORS = ("black", "white", "navy", "red", "olive", "sand", "grey", "teal")
SIZES = ("XS", "S", "M", "L", "XL")
KINDS = ("page_view",) * 8 + ("search", "search", "add_to_cart", "add_to_cart", "login",
                              "checkout", "payment_succeeded", "email_open", "refund")  # fmt: skip
ORDER_KINDS = ("checkout", "payment_succeeded", "refund")
PATHS = ("/", "/products/", "/products/", "/products/", "/search?q=", "/cart", "/account",
         "/blog/", "/checkout", "/help/")  # fmt: skip
AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.2 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.6099.144 Mobile Safari/537.36",
    "shop-ios/4.12.1 (iPhone15,3; iOS 17.2)",
)
REFERRERS = ("", "", "", "https://www.google.com/", "https://www.bing.com/",
             "https://news.ycombinator.com/", "https://t.co/", "newsletter")  # fmt: skip

SCHEMA = """
CREATE TABLE users (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    email text NOT NULL,
    full_name text NOT NULL,
    plan text NOT NULL,
    country char(2) NOT NULL,
    created_at timestamptz NOT NULL,
    last_login_at timestamptz,
    marketing_opt_in boolean NOT NULL DEFAULT false,
    settings jsonb NOT NULL DEFAULT '{}'
);
CREATE TABLE orders (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL,
    status text NOT NULL,
    currency char(3) NOT NULL,
    subtotal numeric(12,2) NOT NULL,
    tax numeric(12,2) NOT NULL,
    total numeric(12,2) NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    shipping_address jsonb NOT NULL,
    note text
);
CREATE TABLE order_items (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    order_id bigint NOT NULL,
    line_no int NOT NULL,
    sku text NOT NULL,
    product_name text NOT NULL,
    quantity int NOT NULL,
    unit_price numeric(10,2) NOT NULL,
    discount numeric(10,2) NOT NULL DEFAULT 0,
    attributes jsonb
);
CREATE TABLE events (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL,
    order_id bigint,
    kind text NOT NULL,
    occurred_at timestamptz NOT NULL,
    payload jsonb NOT NULL
);
"""

INDEXES = """
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_created_at_idx ON users (created_at);
CREATE INDEX orders_user_id_idx ON orders (user_id);
CREATE INDEX orders_created_at_idx ON orders (created_at);
CREATE INDEX orders_open_status_idx ON orders (status) WHERE status NOT IN ('delivered', 'cancelled');
CREATE INDEX order_items_order_id_idx ON order_items (order_id);
CREATE INDEX order_items_sku_idx ON order_items (sku);
CREATE INDEX events_user_time_idx ON events (user_id, occurred_at);
CREATE INDEX events_kind_time_idx ON events (kind, occurred_at);
CREATE INDEX events_order_id_idx ON events (order_id) WHERE order_id IS NOT NULL;
ALTER TABLE orders ADD FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE order_items ADD FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE;
ALTER TABLE events ADD FOREIGN KEY (user_id) REFERENCES users (id);
"""  # noqa: E501


@dataclass
class Shape:
    """Row counts of the generated database: per order ~1/8 user, 2.5 items, 3 events."""

    orders: int

    @property
    def users(self) -> int:
        return max(10, self.orders // 8)

    @property
    def events(self) -> int:
        return self.orders * 3


def users_sql(lo: int, hi: int, shape: Shape) -> str:
    return f"""
INSERT INTO users (id, email, full_name, plan, country, created_at, last_login_at,
                   marketing_opt_in, settings)
SELECT g, lower(fn) || '.' || lower(ln) || g || '@' || {pick(DOMAINS)}, fn || ' ' || ln,
       {pick(PLANS)}, {pick(COUNTRIES)},
       timestamptz '2020-01-01' + (g::float8 / {shape.users}) * interval '1400 days'
           + random() * interval '1 day',
       CASE WHEN random() < 0.9
            THEN timestamptz '2024-01-01' + random() * interval '200 days' END,
       random() < 0.35,
       jsonb_build_object('theme', {pick(("light", "dark", "system"))},
                          'locale', {pick(LOCALES)}, 'timezone', {pick(TIMEZONES)},
                          'notifications', jsonb_build_object('email', random() < 0.7,
                                                              'sms', random() < 0.1,
                                                              'push', random() < 0.4))
FROM (SELECT g, {pick(FIRST)} AS fn, {pick(LAST)} AS ln
      FROM generate_series({lo}, {hi}) g) s;
"""


def orders_sql(lo: int, hi: int, shape: Shape) -> str:
    return f"""
INSERT INTO orders (id, user_id, status, currency, subtotal, tax, total, created_at,
                    updated_at, shipping_address, note)
SELECT g, 1 + floor(random() * {shape.users})::bigint, {pick(STATUSES)}, {pick(CURRENCIES)},
       subtotal, round(subtotal * 0.08, 2), subtotal + round(subtotal * 0.08, 2),
       created, created + random() * interval '6 days',
       jsonb_build_object('name', {pick(FIRST)} || ' ' || {pick(LAST)},
                          'line1', (1 + floor(random() * 300))::int || ' ' || {pick(STREETS)},
                          'city', {pick(CITIES)},
                          'postal_code', lpad(floor(random() * 99999)::int::text, 5, '0'),
                          'country', {pick(COUNTRIES)}),
       CASE WHEN random() < 0.12 THEN {pick(NOTES)} END
FROM (SELECT g, round((4.99 + random() * random() * 480)::numeric, 2) AS subtotal,
             timestamptz '2021-01-01' + (g::float8 / {shape.orders}) * interval '1200 days'
                 + random() * interval '3 hours' AS created
      FROM generate_series({lo}, {hi}) g) s;
"""


def items_sql(lo: int, hi: int) -> str:
    """1-4 lines per order (deterministic from the order id); a product's name and price
    follow from its number, as in a real catalogue."""
    adjectives = ",".join(lit(v) for v in ADJECTIVES)
    nouns = ",".join(lit(v) for v in NOUNS)
    return f"""
INSERT INTO order_items (order_id, line_no, sku, product_name, quantity, unit_price, discount,
                         attributes)
SELECT o, i, 'SKU-' || lpad(p::text, 5, '0'),
       (ARRAY[{adjectives}])[1 + p % {len(ADJECTIVES)}] || ' '
           || (ARRAY[{nouns}])[1 + (p / {len(ADJECTIVES)}) % {len(NOUNS)}],
       1 + floor(random() * random() * 4)::int,
       round((2.49 + (p % 400) * 0.75)::numeric, 2),
       CASE WHEN random() < 0.1 THEN round((random() * 10)::numeric, 2) ELSE 0 END,
       CASE WHEN random() < 0.5
            THEN jsonb_build_object('color', {pick(COLORS)}, 'size', {pick(SIZES)}) END
FROM (SELECT o, i, floor(random() * 5000)::int AS p
      FROM generate_series({lo}, {hi}) o, generate_series(1, 1 + (hashint4(o::int) & 3)) i) s;
"""


def events_sql(lo: int, hi: int, shape: Shape) -> str:
    order_kinds = ",".join(lit(v) for v in ORDER_KINDS)
    return f"""
INSERT INTO events (id, user_id, order_id, kind, occurred_at, payload)
SELECT g, 1 + floor(random() * {shape.users})::bigint,
       CASE WHEN kind IN ({order_kinds}) THEN 1 + floor(random() * {shape.orders})::bigint END,
       kind,
       timestamptz '2021-01-01' + (g::float8 / {shape.events}) * interval '1200 days',
       jsonb_build_object('path', {pick(PATHS)} || floor(random() * 5000)::int,
                          'session', substr(md5(random()::text), 1, 20),
                          'ip', '10.' || floor(random() * 256)::int || '.'
                                || floor(random() * 256)::int || '.'
                                || floor(random() * 256)::int,
                          'user_agent', {pick(AGENTS)},
                          'referrer', {pick(REFERRERS)},
                          'duration_ms', floor(random() * random() * 3000)::int)
FROM (SELECT g, {pick(KINDS)} AS kind FROM generate_series({lo}, {hi}) g) s;
"""


def batches(lo: int, hi: int, size: int) -> Iterator[tuple[int, int]]:
    while lo <= hi:
        yield lo, min(hi, lo + size - 1)
        lo += size


def seed_sql(seed: int, stream: int) -> str:
    """setseed() for one session: every psql call is a new session with its own random()."""
    return f"SELECT setseed({((seed * 7919 + stream * 104729) % 199_999) / 200_000:.6f});\n"


def generate_shop(server: PgServer, size_bytes: int, seed: int, timeout: float) -> Shape:
    """Create and fill the orders schema server-side (INSERT ... SELECT generate_series),
    in batches so that progress shows and no statement runs for minutes."""
    shape = Shape(max(1000, (size_bytes - EMPTY_DB_BYTES) // BYTES_PER_ORDER))
    server.psql(SCHEMA, db=DB)
    server.psql(seed_sql(seed, 0) + users_sql(1, shape.users, shape), db=DB, timeout=timeout)
    step = 100_000
    for n, (lo, hi) in enumerate(batches(1, shape.orders, step), start=1):
        sql = seed_sql(seed, n) + orders_sql(lo, hi, shape) + items_sql(lo, hi)
        server.psql(sql, db=DB, timeout=timeout)
        say(f"  orders + items {hi:,}/{shape.orders:,}")
    for n, (lo, hi) in enumerate(batches(1, shape.events, step * 3), start=1000):
        server.psql(seed_sql(seed, n) + events_sql(lo, hi, shape), db=DB, timeout=timeout)
        say(f"  events {hi:,}/{shape.events:,}")
    say("  indexes and foreign keys")
    server.psql(
        "SET maintenance_work_mem = '512MB';\n" + INDEXES
        + "".join(f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), max(id)) FROM {t};\n"
                  for t in ("users", "orders", "order_items", "events")),
        db=DB, timeout=timeout,
    )  # fmt: skip
    return shape


def churn_where(table: str, key: str, fraction: float, churn: str) -> str:
    """A WHERE clause picking ``fraction`` of the table's rows: anywhere (uniform), or only
    among the newest ``RECENT_WINDOW`` of the keys (recent)."""
    if churn == "uniform":
        return f"random() < {fraction}"
    return (
        f"{key} > (SELECT max({key}) FROM {table}) * {1 - RECENT_WINDOW} "
        f"AND random() < {fraction / RECENT_WINDOW}"
    )


def churn_shop(server: PgServer, shape: Shape, seed: int, churn: str, timeout: float) -> None:
    """Day 2: delete 0.5% of orders (their items cascade) and events, update 2% of users,
    orders and events, insert 1% new users, orders (with items) and events."""

    def where(table: str, fraction: float) -> str:
        return churn_where(table, "id", fraction, churn)

    new_users = max(1, int(shape.users * INSERT_FRACTION))
    new_orders = max(1, int(shape.orders * INSERT_FRACTION))
    new_events = max(1, int(shape.events * INSERT_FRACTION))
    sql = f"""{seed_sql(seed + 1, 0)}
BEGIN;
DELETE FROM orders WHERE {where("orders", DELETE_FRACTION)};
DELETE FROM events WHERE {where("events", DELETE_FRACTION)};
UPDATE users SET last_login_at = timestamptz '2024-07-20' + random() * interval '1 day',
                 settings = settings || jsonb_build_object('theme', {pick(("light", "dark"))})
  WHERE {where("users", UPDATE_FRACTION)};
UPDATE orders SET status = {pick(("shipped", "delivered", "refunded", "cancelled"))},
                  updated_at = timestamptz '2024-07-20' + random() * interval '1 day'
  WHERE {where("orders", UPDATE_FRACTION)};
UPDATE events SET payload = payload || '{{"processed": true}}'
  WHERE {where("events", UPDATE_FRACTION)};
{users_sql(shape.users + 1, shape.users + new_users, shape)}
{orders_sql(shape.orders + 1, shape.orders + new_orders, shape)}
{items_sql(shape.orders + 1, shape.orders + new_orders)}
{events_sql(shape.events + 1, shape.events + new_events, shape)}
COMMIT;
"""
    server.psql(sql, db=DB, timeout=timeout)


def generate_pgbench(server: PgServer, scale: int, timeout: float) -> None:
    """pgbench's own schema, generated server-side (-I G), with primary and foreign keys."""
    argv = [server.tool("pgbench"), "-i", "-q", "-s", str(scale), "-I", "dtGvpf",
            "-h", str(server.socket_dir), "-p", str(server.port), "-U", "postgres", DB]  # fmt: skip
    try:
        out = subprocess.run(
            argv, cwd="/", capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"pgbench -i timed out after {timeout:.0f} s") from None
    if out.returncode != 0:
        raise BenchError(f"pgbench -i failed: {out.stderr.strip()[-2000:]}")


def churn_pgbench(server: PgServer, scale: int, seed: int, churn: str, timeout: float) -> None:
    """Day 2 for pgbench tables: accounts -0.5%, 2% updated, +1%; history gains 1% of
    the accounts as transactions; 2% of tellers and branches updated."""
    accounts = 100_000 * scale
    new = max(1, int(accounts * INSERT_FRACTION))

    def where(table: str, key: str, fraction: float) -> str:
        return churn_where(table, key, fraction, churn)

    sql = f"""{seed_sql(seed + 1, 0)}
BEGIN;
DELETE FROM pgbench_accounts WHERE {where("pgbench_accounts", "aid", DELETE_FRACTION)};
UPDATE pgbench_accounts SET abalance = abalance + floor(random() * 1000)::int - 500
  WHERE {where("pgbench_accounts", "aid", UPDATE_FRACTION)};
UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE random() < {UPDATE_FRACTION};
UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE random() < {UPDATE_FRACTION};
INSERT INTO pgbench_accounts (aid, bid, abalance, filler)
  SELECT g, 1 + floor(random() * {scale})::int, 0, '' FROM generate_series({accounts + 1},
                                                                          {accounts + new}) g;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler)
  SELECT 1 + floor(random() * {10 * scale})::int, bid, aid, floor(random() * 1000)::int - 500,
         timestamp '2024-07-20' + random() * interval '1 day', ''
  FROM pgbench_accounts WHERE random() < {INSERT_FRACTION};
COMMIT;
"""
    server.psql(sql, db=DB, timeout=timeout)


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------


@dataclass
class Config:
    size_mb: float
    pgbench_scale: int | None
    churn: str
    seed: int
    jobs: int
    timeout: float
    keep: bool
    restic_fc: bool
    smoke: bool


@dataclass
class Results:
    measurements: list[Measurement] = field(default_factory=list)
    server_cpu: dict[str, float] = field(default_factory=dict)  # "column/phase" -> s
    stored: dict[str, dict[str, int]] = field(default_factory=dict)  # column -> numbers
    verified: dict[str, bool] = field(default_factory=dict)
    database: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)


def plan_text(repo: Path, jobs: int) -> str:
    return f"""app = "bench"
env = "prod"
[targets]
rpo = "24h"
rto = "1h"
[[sources]]
name = "db"
type = "postgres"
url = "${{BENCH_DB_URL}}"
globals = false
jobs = {jobs}
[[destinations]]
name = "local"
repository = "{repo}"
"""


def clean_env(env: dict[str, str]) -> dict[str, str]:
    """Drop the caller's libpq variables: every tool gets exactly the server's."""
    return {k: v for k, v in env.items() if not k.startswith("PG")}


class PgBench:
    def __init__(self, cfg: Config, run_dir: Path, server: PgServer, safehold: list[str]) -> None:
        self.cfg = cfg
        self.dir = run_dir
        self.server = server
        self.safehold = harness.Safehold(safehold)
        self.restic = harness.Restic(["restic"])
        self.columns = [c for c in COLUMNS if c != "restic_fc" or cfg.restic_fc]
        self.logs = run_dir / "logs"
        self.tmp = run_dir / "tmp"
        self.plan = run_dir / "plan" / "safehold.toml"
        for folder in (self.logs, self.tmp, self.plan.parent, run_dir / "dumps"):
            folder.mkdir(parents=True, exist_ok=True)
        self.plan.write_text(plan_text(self.repo("safehold"), cfg.jobs))
        self.res = Results()
        self.failed: set[str] = set()
        self.source_counts: dict[str, int] = {}

    # --- paths and environments -----------------------------------------------

    def repo(self, column: str) -> Path:
        return self.dir / "repos" / column

    def home(self, column: str) -> Path:
        return self.dir / "homes" / column

    def dump_file(self, day: str) -> Path:
        return self.dir / "dumps" / f"{day}.pgdump"

    def env(self, column: str) -> dict[str, str]:
        home = self.home(column)
        home.mkdir(parents=True, exist_ok=True)
        if column == "safehold":
            env = clean_env(self.safehold.env(home))
            env["BENCH_DB_URL"] = self.server.url(DB)
        else:
            env = clean_env(self.restic.env(home))  # private HOME; RESTIC_PASSWORD is harmless
            env.update(self.server.client_env())
        env["TMPDIR"] = str(self.tmp)  # safehold's restore temp file stays in the scratch dir
        return env

    # --- one timed command -------------------------------------------------------

    def timed(self, column: str, phase: str, argv: list[str], warm_paths: list[Path],
              db_bytes: int) -> bool:  # fmt: skip
        """Settle, warm, run and record one command; False (column benched) on failure."""
        if column in self.failed:
            return False
        env = self.env(column)
        log = self.logs / f"{column}-{phase}.log"
        self.server.settle()
        if phase != "restore":
            self.server.warm()  # the database is the input
        warm(warm_paths)
        before = self.server.cpu_seconds()
        try:
            u = harness.run_timed(argv, env, None, log, self.cfg.timeout)
            if u.exit_code != 0:
                raise BenchError(f"exit code {u.exit_code}: {shlex.join(argv)}")
        except BenchError as exc:
            self.fail(column, phase, str(exc), log)
            return False
        server_cpu = self.server.cpu_seconds() - before
        m = Measurement(
            1, column, phase, round(u.wall_s, 3), round(u.user_s, 3), round(u.sys_s, 3),
            u.maxrss_kib, u.exit_code, db_bytes,
        )  # fmt: skip
        self.res.measurements.append(m)
        self.res.server_cpu[f"{column}/{phase}"] = round(server_cpu, 3)
        say(
            f"  {column:9} {phase:8} {u.wall_s:8.2f} s {db_bytes / MB / u.wall_s:8.1f} DB MB/s  "
            f"cpu {m.cpu_s:7.2f} s  server cpu {server_cpu:7.2f} s  "
            f"rss {m.maxrss_kib / 1024:7.1f} MiB"
        )
        return True

    def fail(self, column: str, phase: str, message: str, log: Path | None = None) -> None:
        self.failed.add(column)
        self.res.errors.append({"column": column, "phase": phase, "message": message})
        say(f"  FAILED {column} {phase}: {message}")
        if log is not None:
            say(log_tail(log))

    def untimed(self, column: str, what: str, argv: list[str], cwd: Path | None = None) -> str:
        """Run a setup/inspection command; its output, or a BenchError."""
        try:
            out = subprocess.run(
                argv, env=self.env(column), cwd=cwd, capture_output=True, text=True,
                timeout=max(self.cfg.timeout, 120), check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BenchError(f"{what} timed out: {shlex.join(argv)}") from None
        if out.returncode != 0:
            raise BenchError(f"{what} failed ({out.returncode}): {out.stderr.strip()[-1500:]}")
        return out.stdout

    # --- commands -----------------------------------------------------------------

    def pg_dump(self, *extra: str) -> list[str]:
        return [self.server.tool("pg_dump"), "--format=custom", "--no-password", *extra, DB]

    def restic_backup(self, column: str, compress: bool) -> list[str]:
        dump = shlex.join(self.pg_dump() if compress else self.pg_dump("--compress=0"))
        restic = shlex.join(
            [*self.restic.exe, "-r", str(self.repo(column)), "--compression", "auto", "backup",
             "--stdin", "--stdin-filename", DUMP_NAME]
        )  # fmt: skip
        return ["bash", "-c", f"set -o pipefail; {dump} | {restic}"]

    def backup_argv(self, column: str, day: str) -> list[str]:
        if column == "pg_dump":
            return self.pg_dump("--file", str(self.dump_file(day)))
        if column == "safehold":
            return [*self.safehold.exe, "--plan", str(self.plan), "backup", "--reason", "daily"]
        return self.restic_backup(column, compress=column == "restic_fc")

    def restore_argv(self, column: str, target: str) -> list[str]:
        pg_restore = [self.server.tool("pg_restore"), f"--jobs={self.cfg.jobs}", "--no-owner",
                      "--no-password", f"--dbname={target}"]  # fmt: skip
        createdb = [self.server.tool("createdb"), "--no-password", "-T", "template0", target]
        if column == "pg_dump":
            script = f"{shlex.join(createdb)} && {shlex.join([*pg_restore, str(self.dump_file('day2'))])}"  # noqa: E501
            return ["bash", "-c", f"set -e; {script}"]
        if column == "safehold":
            return [*self.safehold.exe, "--plan", str(self.plan), "restore", "latest",
                    "--source", "db", "--into", self.server.url(target)]  # fmt: skip
        # restic: pg_restore --jobs needs a seekable file, so dump to one first (as safehold)
        tmp = self.tmp / f"restic-{target}.pgdump"
        dump = [*self.restic.exe, "-r", str(self.repo(column)), "dump", "latest", f"/{DUMP_NAME}"]
        script = (
            f"{shlex.join(createdb)}; {shlex.join(dump)} > {shlex.quote(str(tmp))}; "
            f"{shlex.join([*pg_restore, str(tmp)])}; rm -f {shlex.quote(str(tmp))}"
        )
        return ["bash", "-c", f"set -e; {script}"]

    # --- phases -------------------------------------------------------------------

    def stored_bytes(self, column: str, day: str) -> int:
        if column == "pg_dump":
            return self.dump_file(day).stat().st_size
        return tree_bytes(self.repo(column))[0]

    def backup_phase(self, day: str) -> None:
        say(f"{PHASES[day]}:")
        db_bytes = self.res.database[f"{day}_bytes"]
        for column in self.columns:
            warm_paths = [] if column == "pg_dump" else [self.repo(column), self.home(column)]
            if not self.timed(column, day, self.backup_argv(column, day), warm_paths, db_bytes):
                continue
            entry = self.res.stored.setdefault(column, {})
            entry[f"{day}_bytes"] = self.stored_bytes(column, day)
            entry[f"{day}_client_cache_bytes"] = tree_bytes(self.home(column))[0]
            if day == "day2":
                # a plain dump is a whole new file every day; a repository only grows
                entry["day2_added_bytes"] = (
                    entry["day2_bytes"] if column == "pg_dump"
                    else entry["day2_bytes"] - entry.get("day1_bytes", 0)
                )  # fmt: skip
        self.record_dump_sizes(day)

    def record_dump_sizes(self, day: str) -> None:
        """What each restic snapshot holds (``restic stats``, untimed): the size of the
        -Z0 dump for the table's intro, and a sanity check that the pipes carried a dump."""
        for column in ("restic", "restic_fc"):
            if column in self.failed or column not in self.columns:
                continue
            with contextlib.suppress(BenchError, ValueError, KeyError):
                argv = [*self.restic.exe, "-r", str(self.repo(column)), "stats", "latest",
                        "--json"]  # fmt: skip
                size = int(json.loads(self.untimed(column, "restic stats", argv))["total_size"])
                self.res.stored[column][f"{day}_dump_bytes"] = size
                if column == "restic":
                    self.res.database[f"{day}_dump_z0_bytes"] = size

    def restore_phase(self) -> None:
        say(f"{PHASES['restore']}:")
        db_bytes = self.res.database["day2_bytes"]
        targets = {"pg_dump": "restored_plain", "safehold": "restored_sh",
                   "restic": "restored_restic"}  # fmt: skip
        for column, target in targets.items():
            if column in self.failed or column not in self.columns:
                continue
            warm_paths = (
                [self.dump_file("day2")] if column == "pg_dump"
                else [self.repo(column), self.home(column)]
            )  # fmt: skip
            if self.timed(column, "restore", self.restore_argv(column, target), warm_paths,
                          db_bytes):  # fmt: skip
                self.verify(column, target)
            if not self.cfg.keep:
                with contextlib.suppress(BenchError):
                    self.server.psql(f"DROP DATABASE IF EXISTS {target} WITH (FORCE)")

    def verify(self, column: str, target: str) -> None:
        got = self.server.row_counts(target)
        ok = got == self.source_counts
        self.res.verified[column] = ok
        if ok:
            rows = sum(got.values())
            say(f"  {column:9} restore verified: {len(got)} tables, {rows:,} rows as in the source")
            return
        diff = {t: (self.source_counts.get(t), got.get(t))
                for t in sorted(self.source_counts.keys() | got.keys())
                if self.source_counts.get(t) != got.get(t)}  # fmt: skip
        self.fail(column, "verify", f"row counts differ from the source (source, restored): {diff}")

    # --- the run -------------------------------------------------------------------

    def describe_database(self, day: str, seconds: float) -> None:
        self.server.psql("VACUUM ANALYZE", db=DB, timeout=self.cfg.timeout)  # untimed; see README
        size = self.server.database_size()
        counts = self.server.row_counts()
        self.res.database[f"{day}_bytes"] = size
        self.res.database[f"{day}_rows"] = counts
        self.res.database[f"{day}_seconds"] = round(seconds, 1)
        tables = ", ".join(f"{t.split('.')[-1]} {n:,}" for t, n in counts.items())
        say(f"{day}: {size / MB:,.1f} MB on disk in {seconds:.1f} s ({tables})")

    def run(self) -> None:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.server.start()
        self.res.extra["server_version"] = self.server.psql("SHOW server_version").strip()
        self.server.psql(f"CREATE DATABASE {DB}")
        say(f"server {self.res.extra['server_version']} on port {self.server.port} "
            f"({time.perf_counter() - t0:.1f} s); generating the database")  # fmt: skip
        t0 = time.perf_counter()
        shape: Shape | None = None
        if cfg.pgbench_scale:
            generate_pgbench(self.server, cfg.pgbench_scale, cfg.timeout)
        else:
            shape = generate_shop(self.server, int(cfg.size_mb * MB), cfg.seed, cfg.timeout)
        self.describe_database("day1", time.perf_counter() - t0)

        for column in self.columns:  # init (not in the table; KDF cost, JSON only)
            if column == "safehold":
                argv = [*self.safehold.exe, "--plan", str(self.plan), "init"]
            elif column != "pg_dump":
                self.repo(column).parent.mkdir(parents=True, exist_ok=True)
                argv = self.restic.init(self.repo(column))
            else:
                continue
            self.timed(column, "init", argv, [], 0)

        self.backup_phase("day1")
        t0 = time.perf_counter()
        if cfg.pgbench_scale:
            churn_pgbench(self.server, cfg.pgbench_scale, cfg.seed, cfg.churn, cfg.timeout)
        else:
            assert shape is not None
            churn_shop(self.server, shape, cfg.seed, cfg.churn, cfg.timeout)
        self.describe_database("day2", time.perf_counter() - t0)
        self.source_counts = self.res.database["day2_rows"]
        self.backup_phase("day2")
        self.restore_phase()
        if "safehold" not in self.failed:
            with contextlib.suppress(BenchError, ValueError):
                argv = [*self.safehold.exe, "--plan", str(self.plan), "stats", "--json"]
                self.res.extra["safehold_stats"] = json.loads(
                    self.untimed("safehold", "safehold stats", argv)
                )
        if (
            "safehold" in self.columns
            and "safehold" not in self.res.verified
            and not any(e.get("column") == "safehold" for e in self.res.errors)
        ):
            self.fail("safehold", "verify", "the safehold restore was not verified")


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def measurement(res: Results, column: str, phase: str) -> Measurement | None:
    found = [m for m in res.measurements if m.tool == column and m.phase == phase]
    return found[0] if found else None


def summarize(res: Results, columns: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for column in columns:
        entry: dict[str, Any] = {}
        for phase in ("init", *PHASES):
            m = measurement(res, column, phase)
            entry[phase] = None if m is None else {
                "wall_s": m.wall_s,
                "db_mb_per_s": round(m.data_bytes / MB / m.wall_s, 2)
                if m.data_bytes and m.wall_s else None,
                "cpu_s": round(m.cpu_s, 3),
                "server_cpu_s": res.server_cpu.get(f"{column}/{phase}"),
                "maxrss_mib": round(m.maxrss_kib / 1024, 1),
            }  # fmt: skip
        entry.update(res.stored.get(column, {}))
        entry["restore_verified"] = res.verified.get(column)
        out[column] = entry
    return out


METRICS = (
    ("time (s)", "wall_s", "s"),
    ("DB MB/s", "db_mb_per_s", "MB/s"),
    ("CPU user+sys (s)", "cpu_s", "s"),
    ("DB server CPU (s)", "server_cpu_s", "s"),
    ("peak RSS (MiB)", "maxrss_mib", "MiB"),
)


def markdown(summary: dict[str, dict[str, Any]], meta: dict[str, Any],
             errors: list[dict[str, Any]]) -> str:  # fmt: skip
    columns = list(summary)
    db = meta["database"]
    rows = db.get("day1_rows", {})
    tables = ", ".join(f"{t.split('.')[-1]} {n:,}" for t, n in rows.items())
    z0 = db.get("day1_dump_z0_bytes")
    plain = summary.get("pg_dump", {}).get("day1_bytes")
    intro = (
        f"Database: {db.get('day1_bytes', 0) / MB:,.0f} MB on disk ({tables}); "
        f"dump {'n/a' if z0 is None else f'{z0 / MB:,.0f}'} MB uncompressed (-Z0), "
        f"{'n/a' if plain is None else f'{plain / MB:,.0f}'} MB as pg_dump -Fc. "
        f"Day 2 ({meta['churn']} churn): {UPDATE_FRACTION:.0%} of rows updated, "
        f"{INSERT_FRACTION:.0%} inserted, {DELETE_FRACTION:.1%} deleted. "
        f"PostgreSQL {meta['server_version']}, {meta['cpus']} CPUs; "
        f"{', '.join(meta['versions'])}; restores with {meta['jobs']} jobs."
    )
    lines = [intro, "", table_row("Phase", "Metric", [COLUMNS[c] for c in columns]),
             "|---|---|" + "---:|" * len(columns)]  # fmt: skip
    for phase, title in PHASES.items():
        for i, (label, key, unit) in enumerate(METRICS):
            cells = []
            for c in columns:
                if phase == "restore" and c == "restic_fc":
                    cells.append("-")
                elif summary[c][phase] is None:
                    cells.append("FAILED")
                else:
                    cells.append(fmt(summary[c][phase][key], unit))
            lines.append(table_row(title if i == 0 else "", label, cells))
        if phase == "restore":
            cells = [
                "-" if c == "restic_fc"
                else {True: "yes", False: "NO"}.get(summary[c]["restore_verified"], "n/a")
                for c in columns
            ]  # fmt: skip
            lines.append(table_row("", "row counts = source", cells))
        else:
            key, label = (("day1_bytes", "stored (MB)") if phase == "day1"
                          else ("day2_added_bytes", "added (MB)"))  # fmt: skip
            cells = ["n/a" if summary[c].get(key) is None else fmt(summary[c][key] / MB, "MB")
                     for c in columns]  # fmt: skip
            lines.append(table_row("", label, cells))
    for err in errors:
        lines.append(f"\n**FAILED** {err.get('column', '')} {err.get('phase', '')}: "
                     f"{err['message']}")  # fmt: skip
    return "\n".join(lines) + "\n"


def versions(server: PgServer, safehold: list[str]) -> list[str]:
    out = []
    for name, argv in (("safehold", [*safehold, "--version"]), ("restic", ["restic", "version"]),
                       ("pg_dump", [server.tool("pg_dump"), "--version"])):  # fmt: skip
        try:
            text = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        except OSError:
            text = ""
        out.append(harness.short_version(name, text.strip().splitlines()[0] if text else "?"))
    return out


# --------------------------------------------------------------------------
# Cleanup on Ctrl-C / SIGTERM
# --------------------------------------------------------------------------


def stop_children() -> None:
    """Stop the commands we started (each timed one leads its own process group)."""
    me = os.getpid()
    children = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = proc_cpu_ticks(int(entry.name))
            if info is not None and info[0] == me:
                children.append(int(entry.name))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in children:
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while children and time.monotonic() < deadline:
            for pid in list(children):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    children.remove(pid)
            time.sleep(0.05)
        if not children:
            return


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark safehold's PostgreSQL backups against pg_dump and restic."
    )
    p.add_argument("--size-mb", type=float, default=1200.0,
                   help="database size on disk to generate, MB (default 1200)")  # fmt: skip
    p.add_argument("--pgbench-scale", type=int, default=None, metavar="N",
                   help="use `pgbench -i -s N` tables instead (~15 MB per unit; ignores "
                        "--size-mb)")  # fmt: skip
    p.add_argument("--churn", choices=("uniform", "recent"), default="uniform",
                   help="day-2 updates/deletes hit random rows anywhere (uniform, default) or "
                        f"only the newest {RECENT_WINDOW:.0%} (recent)")  # fmt: skip
    p.add_argument("--seed", type=int, default=1, help="data seed (day 2 uses seed+1)")
    p.add_argument("--jobs", type=int, default=4,
                   help="pg_restore --jobs for every restore (and the plan's jobs)")  # fmt: skip
    p.add_argument("--safehold", default=None, metavar="CMD",
                   help=f"safehold command (default: {DEFAULT_SAFEHOLD} if present)")  # fmt: skip
    p.add_argument("--no-restic-fc", dest="restic_fc", action="store_false",
                   help="skip the pg_dump -Fc (compressed) | restic column")  # fmt: skip
    p.add_argument("--workdir", type=Path, default=None,
                   help="parent of the scratch directory (default: system temp)")  # fmt: skip
    p.add_argument("--keep", action="store_true",
                   help="keep the scratch directory (server data, dumps, repos, logs)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=None, help="seconds per command")
    p.add_argument("--out", type=Path, default=Path("pg-results.json"), help="JSON results")
    p.add_argument("--smoke", action="store_true",
                   help=f"{SMOKE_SIZE_MB} MB DB, {SMOKE_TIMEOUT:.0f} s per command")  # fmt: skip
    args = p.parse_args(argv)
    if args.smoke:
        args.size_mb, args.pgbench_scale = SMOKE_SIZE_MB, None
        args.timeout = args.timeout or SMOKE_TIMEOUT
    args.timeout = args.timeout or DEFAULT_TIMEOUT
    if args.safehold is None:
        args.safehold = str(DEFAULT_SAFEHOLD) if DEFAULT_SAFEHOLD.exists() else "safehold"
    if args.size_mb <= 0 or args.jobs < 1 or (args.pgbench_scale or 1) < 1:
        p.error("--size-mb, --jobs and --pgbench-scale must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    safehold = shlex.split(args.safehold)
    bin_dir = pg_bin_dir()
    missing = [name for name, ok in (
        ("PostgreSQL server binaries (apt-get install postgresql)", bin_dir is not None),
        ("restic", shutil.which("restic") is not None),
        (f"safehold ({args.safehold}; see --safehold)",
         shutil.which(safehold[0]) is not None or os.access(safehold[0], os.X_OK)),
        ("runuser (util-linux)", os.geteuid() != 0 or shutil.which("runuser") is not None),
    ) if not ok]  # fmt: skip
    if missing or bin_dir is None:
        say(f"not found: {', '.join(missing)}")
        return 2
    cfg = Config(args.size_mb, args.pgbench_scale, args.churn, args.seed, args.jobs,
                 args.timeout, args.keep, args.restic_fc, args.smoke)  # fmt: skip
    parent = args.workdir or Path(tempfile.gettempdir())
    parent.mkdir(parents=True, exist_ok=True)
    expected = (args.pgbench_scale * 15 if args.pgbench_scale else args.size_mb) * MB
    free = shutil.disk_usage(parent).free
    if free < expected * 5:
        say(f"warning: {parent} has {free / 1e9:.1f} GB free; this run needs ~"
            f"{expected * 5 / 1e9:.1f} GB")  # fmt: skip

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if inherited as ignored
    signal.signal(signal.SIGTERM, interrupt)
    run_dir = Path(tempfile.mkdtemp(prefix="safehold-pgbench-", dir=parent))
    run_dir.chmod(0o755)  # the postgres user must reach the server's directory
    say(f"scratch directory: {run_dir}")
    server = PgServer(run_dir / "pg", bin_dir, free_port())
    bench = PgBench(cfg, run_dir, server, safehold)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    t0 = time.perf_counter()
    interrupted = False
    try:
        bench.run()
    except BenchError as exc:
        bench.res.errors.append({"message": str(exc)})
        say(f"FAILED: {exc}")
    except KeyboardInterrupt:
        interrupted = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        say("interrupted: stopping commands and the server")
        stop_children()
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        server.stop()
        if args.keep:
            say(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if interrupted:
        return 130
    res = bench.res
    meta = {
        "started": started,
        "seconds": round(time.perf_counter() - t0, 1),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "rss_method": harness.RSS_METHOD,
        "server_version": res.extra.get("server_version", "?"),
        "versions": versions(server, safehold),
        "size_mb": cfg.size_mb,
        "pgbench_scale": cfg.pgbench_scale,
        "churn": cfg.churn,
        "seed": cfg.seed,
        "jobs": cfg.jobs,
        "smoke": cfg.smoke,
        "database": res.database,
    }
    summary = summarize(res, bench.columns)
    results = {"meta": meta, "summary": summary, "errors": res.errors,
               "measurements": [asdict(m) for m in res.measurements],
               "server_cpu_s": res.server_cpu,
               "safehold_stats": res.extra.get("safehold_stats")}  # fmt: skip
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    say(f"results written to {args.out} ({meta['seconds']:.0f} s in all)")
    print(markdown(summary, meta, res.errors))
    if res.errors:
        say(f"{len(res.errors)} failure(s):")
        for err in res.errors:
            say(f"  - {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
