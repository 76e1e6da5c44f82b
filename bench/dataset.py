#!/usr/bin/env python3
"""Seeded "small web app" dataset for the backup benchmarks.

At ``scale=1.0`` the tree is about 2.1 GB:

* ``uploads/YYYY/MM/uNNNNN/*`` - ~16,000 user uploads of 1-200 KiB, half
  incompressible (jpg/png/webp/pdf bodies are random bytes), half text
  (json/csv/txt/md/html/log) that compresses ~3-6x with zstd; ~6% of them are
  exact duplicates of another upload;
* ``media/``, ``backups/`` - six 47-91 MB random media/archive files, one of
  them a near-duplicate of another (1 KiB inserted in the middle);
* ``exports/``, ``logs/`` - three 53-65 MB CSV/log exports;
* ``db/app-production.sql`` - a ~760 MB plain pg_dump-style SQL dump.

Upload counts and big-file sizes scale linearly with ``scale``; upload sizes do
not (a 0.01 tree still has 1-200 KiB uploads, just 160 of them).

Everything, file mtimes included, derives from ``random.Random(seed)``, so a
given ``(seed, scale)`` always yields a byte-identical tree. Speed matters (the
harness regenerates the tree for every ``--repeat``), so text is produced in
batches: one ``randbytes`` call per column picks entries from fixed 65,536-entry
pools and an f-string comprehension formats whole rows; this runs at ~100 MB/s
where per-character generation would be far slower.

``mutate(root, seed)`` applies a "next day" change; see its docstring.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import dataclasses
import importlib
import itertools
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Protocol

KIB = 1024
MIB = 1024 * KIB
MB = 1_000_000
POOL = 65_536
BLOCK = 8 * MIB
DAY = 86_400

#: Day 0 of the synthetic history; row timestamps count days from here.
DATE0 = date(2020, 1, 1)
DATE0_EPOCH = 1_577_836_800
#: "Now" for a freshly generated tree (2024-01-01T00:00:00Z).
BASE_EPOCH = 1_704_067_200

# --------------------------------------------------------------------------
# Dataset shape at scale 1.0
# --------------------------------------------------------------------------

UPLOADS = 16_000
UPLOAD_MIN = 1 * KIB
UPLOAD_MAX = 200 * KIB
#: Upload size = MIN + (MAX - MIN) * u**SKEW: mostly small files, mean ~48 KiB.
UPLOAD_SKEW = 3.2
DUPLICATE_FRACTION = 0.06

MEDIA: tuple[tuple[str, float], ...] = (
    ("media/audio/podcast-ep42.mp3", 47),
    ("backups/thumbnails-2023.zip", 55),
    ("media/video/webinar-2023-10.mp4", 63),
    ("backups/static-assets-2023-12.tar.gz", 78),
    ("media/video/product-tour-4k.mp4", 91),
)
#: (copy, original): the copy gets 1 KiB of new bytes inserted mid-file.
NEAR_DUPLICATE = ("media/video/webinar-2023-10-final.mp4", "media/video/webinar-2023-10.mp4")
EXPORT_ORDERS = ("exports/orders-2023.csv", 65)
EXPORT_CUSTOMERS = ("exports/customers.csv", 53)
EXPORT_ACCESS_LOG = ("logs/nginx-access.log", 59)
SQL_DUMP = ("db/app-production.sql", 760)

#: Upload kinds and their relative frequency; the first four are binary.
UPLOAD_KINDS: dict[str, int] = {
    "jpg": 26, "png": 12, "webp": 5, "pdf": 7,
    "json": 12, "csv": 9, "txt": 7, "md": 5, "html": 9, "log": 8,
}  # fmt: skip
BINARY_KINDS = frozenset({"jpg", "png", "webp", "pdf"})

MAGIC: dict[str, bytes] = {
    "jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    "webp": b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n",
    "mp3": b"ID3\x04\x00\x00\x00\x00\x00\x00",
    "mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41",
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
    "gz": b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03",
}

# --------------------------------------------------------------------------
# Vocabulary pools
# --------------------------------------------------------------------------

# fmt: off
_WORDS = [
    "the", "of", "and", "to", "a", "in", "is", "it", "you", "that", "he", "was", "for",
    "on", "are", "with", "as", "his", "they", "be", "at", "one", "have", "this", "from",
    "or", "had", "by", "hot", "but", "some", "what", "there", "we", "can", "out",
    "other", "were", "all", "your", "when", "up", "use", "word", "how", "said", "an",
    "each", "she", "which", "do", "their", "time", "if", "will", "way", "about", "many",
    "then", "them", "would", "write", "like", "so", "these", "her", "long", "make",
    "thing", "see", "him", "two", "has", "look", "more", "day", "could", "go", "come",
    "did", "my", "sound", "no", "most", "number", "who", "over", "know", "water",
    "than", "call", "first", "people", "may", "down", "side", "been", "now", "find",
    "any", "new", "work", "part", "take", "get", "place", "made", "live", "where",
    "after", "back", "little", "only", "round", "man", "year", "came", "show", "every",
    "good", "me", "give", "our", "under", "name", "very", "through", "just", "form",
    "much", "great", "think", "say", "help", "low", "line", "before", "turn", "cause",
    "same", "mean", "differ", "move", "right", "boy", "old", "too", "does", "tell",
    "sentence", "set", "three", "want", "air", "well", "also", "play", "small", "end",
    "put", "home", "read", "hand", "port", "large", "spell", "add", "even", "land",
    "here", "must", "big", "high", "such", "follow", "act", "why", "ask", "men",
    "change", "went", "light", "kind", "off", "need", "house", "picture", "try", "us",
    "again", "animal", "point", "mother", "world", "near", "build", "self", "earth",
    "father", "head", "stand", "own", "page", "should", "country", "found", "answer",
    "school", "grow", "study", "still", "learn", "plant", "cover", "food", "sun",
    "four", "thought", "let", "keep", "eye", "never", "last", "door", "between", "city",
    "tree", "cross", "since", "hard", "start", "might", "story", "saw", "far", "sea",
    "draw", "left", "late", "run", "while", "press", "close", "night", "real", "life",
    "few", "stop", "order", "customer", "product", "shipping", "delivery", "payment",
    "invoice", "account", "user", "password", "update", "release", "feature", "bug",
    "issue", "support", "ticket", "refund", "cart", "checkout", "discount", "coupon",
    "price", "size", "color", "blue", "red", "green", "black", "white", "small",
    "medium", "large", "review", "rating", "quality", "fast", "slow", "great",
    "excellent", "terrible", "broken", "working", "install", "setup", "config",
    "server", "client", "request", "response", "error", "warning", "database", "backup",
    "restore", "upload", "download", "image", "photo", "video", "file", "folder",
    "report", "export", "import", "monthly", "weekly", "daily", "total", "amount",
    "balance", "team", "project", "meeting", "schedule", "deadline", "launch",
    "campaign", "email", "newsletter", "subscriber"
]
_FIRST = [
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda",
    "William", "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
    "Thomas", "Sarah", "Charles", "Karen", "Christopher", "Nancy", "Daniel", "Lisa",
    "Matthew", "Betty", "Anthony", "Margaret", "Mark", "Sandra", "Donald", "Ashley",
    "Steven", "Kimberly", "Paul", "Emily", "Andrew", "Donna", "Joshua", "Michelle",
    "Kenneth", "Dorothy", "Kevin", "Carol", "Brian", "Amanda", "George", "Melissa",
    "Edward", "Deborah", "Ronald", "Stephanie", "Timothy", "Rebecca", "Jason", "Sharon",
    "Jeffrey", "Laura", "Ryan", "Cynthia", "Jacob", "Kathleen", "Gary", "Amy",
    "Nicholas", "Shirley", "Eric", "Angela", "Jonathan", "Helen", "Stephen", "Anna",
    "Larry", "Brenda", "Justin", "Pamela", "Scott", "Nicole", "Brandon", "Emma",
    "Benjamin", "Samantha", "Samuel", "Katherine", "Gregory", "Christine", "Frank",
    "Debra", "Alexander", "Rachel", "Raymond", "Catherine", "Patrick", "Carolyn",
    "Jack", "Janet", "Dennis", "Ruth", "Jerry", "Maria", "Tyler", "Heather", "Aaron",
    "Diane", "Jose", "Virginia", "Adam", "Julie", "Henry", "Joyce", "Nathan",
    "Victoria", "Lukas", "Sofia", "Mateo", "Chloe", "Hiroshi", "Yuki", "Wei", "Mei",
    "Arjun", "Priya", "Olga", "Ivan", "Fatima", "Omar", "Lars", "Ingrid", "Pierre",
    "Camille"
]
_LAST = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
    "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson",
    "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker",
    "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
    "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker",
    "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy",
    "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson", "Bailey",
    "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson",
    "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes",
    "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross",
    "Foster", "Jimenez", "Mueller", "Schmidt", "Schneider", "Fischer", "Weber",
    "Dubois", "Rossi", "Tanaka", "Suzuki", "Wang", "Li", "Zhang", "Kowalski", "Novak",
    "Jensen", "Hansen", "Silva", "Santos", "Okafor"
]
_ADJ = [
    "Classic", "Premium", "Organic", "Wireless", "Compact", "Deluxe", "Vintage",
    "Ultra", "Smart", "Eco", "Portable", "Ergonomic", "Handmade", "Rustic", "Modern",
    "Essential", "Heavy-Duty", "Lightweight", "Waterproof", "Slim"
]
_NOUN = [
    "Backpack", "Lamp", "Mug", "Chair", "Desk", "Headphones", "Keyboard", "Notebook",
    "Bottle", "Jacket", "Sneakers", "Watch", "Wallet", "Blender", "Kettle", "Pillow",
    "Blanket", "Speaker", "Charger", "Tripod", "Planter", "Candle", "Skillet", "Scarf",
    "Sunglasses", "Umbrella", "Toaster", "Router", "Monitor", "Drone"
]
_CITIES = [
    "Berlin", "Paris", "London", "Madrid", "Rome", "Amsterdam", "Vienna", "Prague",
    "Warsaw", "Lisbon", "Dublin", "Oslo", "Stockholm", "Helsinki", "Copenhagen",
    "Brussels", "Zurich", "Munich", "Hamburg", "Lyon", "Milan", "Barcelona", "Austin",
    "Boston", "Chicago", "Denver", "Seattle", "Portland", "Toronto", "Vancouver",
    "Sydney", "Melbourne", "Tokyo", "Osaka", "Seoul", "Singapore", "Mumbai", "Delhi",
    "Cairo", "Lagos", "Nairobi", "Lima", "Bogota", "Santiago"
]
_STREETS = [
    "Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill",
    "Park", "Church", "High", "Mill", "Station", "Bridge", "River", "Garden", "Market",
    "King", "Queen", "Victoria", "Spring", "Forest", "Meadow", "Sunset"
]
_DOMAINS = [
    "example.com", "mail.example.org", "inbox.example.net", "example.co.uk"
]
_COUNTRIES = [
    "US", "DE", "FR", "GB", "ES", "IT", "NL", "PL", "SE", "CA", "AU", "JP", "BR", "IN",
    "AT", "CH", "BE", "DK", "NO", "IE"
]
_STATUSES = [
    "delivered", "delivered", "shipped", "paid", "pending", "cancelled", "refunded"
]
_PAYMENTS = [
    "card", "card", "card", "paypal", "klarna", "bank_transfer", "apple_pay"
]
_EVENTS = [
    "page_view", "page_view", "page_view", "product_view", "add_to_cart", "search",
    "login", "logout", "checkout_start", "checkout_complete", "signup", "password_reset"
]
_LEVELS = [
    "INFO", "INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"
]
_METHODS = [
    "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"
]
_HTTP = [
    "200", "200", "200", "200", "200", "304", "301", "404", "500", "201"
]
_REFERRERS = [
    "https://www.google.com/", "https://www.google.com/", "-", "-",
    "https://www.bing.com/", "https://t.co/", "https://www.facebook.com/",
    "https://news.ycombinator.com/", "https://duckduckgo.com/",
    "https://shop.example.com/"
]
# fmt: on
_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0.6045.163 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.4.0",
    "python-requests/2.31.0",
)
_API = [
    "/api/v1/orders",
    "/api/v1/products",
    "/api/v1/users",
    "/api/v1/cart",
    "/api/v1/search",
    "/api/v1/session",
    "/api/v2/checkout",
    "/healthz",
    "/static/app.js",
    "/static/app.css",
]


def _zipf(items: Sequence[str], size: int = POOL, s: float = 1.0) -> list[str]:
    """Expand ``items`` to ``size`` entries with Zipf frequencies (rank 1 most common).

    Uniform random indices into the result then give a realistic skew, which is
    what makes the text compress like real text rather than like noise.
    """
    weights = [1.0 / (rank + 1) ** s for rank in range(len(items))]
    total = sum(weights)
    pool: list[str] = []
    for item, weight in zip(items, weights, strict=True):
        pool.extend([item] * max(1, round(size * weight / total)))
    while len(pool) < size:
        pool.extend(items)
    pool = pool[:size]
    random.Random(0).shuffle(pool)
    return pool


def _fixed(make: Callable[[random.Random], str], size: int = POOL) -> list[str]:
    """A pool of ``size`` values drawn by ``make`` from a fixed-seed RNG."""
    rng = random.Random(12345)
    return [make(rng) for _ in range(size)]


def _word_pool() -> list[str]:
    """Words with occasional trailing punctuation so prose has sentences."""
    words = _zipf(_WORDS, s=1.3)
    rng = random.Random(7)
    for i in range(len(words)):
        r = rng.random()
        if r < 0.07:
            words[i] += "."
        elif r < 0.12:
            words[i] += ","
    return words


WORD = _word_pool()
FIRST = _zipf(_FIRST, s=0.8)
LAST = _zipf(_LAST, s=0.8)
FIRST_LC = [n.lower() for n in FIRST]
LAST_LC = [n.lower() for n in LAST]
CITY = _zipf(_CITIES)
COUNTRY = _zipf(_COUNTRIES)
DOMAIN = _zipf(_DOMAINS, s=1.5)
STATUS = _zipf(_STATUSES, s=0.3)
PAYMENT = _zipf(_PAYMENTS, s=0.3)
EVENT = _zipf(_EVENTS, s=0.5)
LEVEL = _zipf(_LEVELS, s=0.2)
METHOD = _zipf(_METHODS, s=0.2)
HTTP = _zipf(_HTTP, s=0.2)
REFERRER = _zipf(_REFERRERS, s=0.5)
AGENT = _zipf(_AGENTS, s=0.7)
API = _zipf(_API)
PRODUCT = _fixed(lambda r: f"{r.choice(_ADJ)} {r.choice(_NOUN)}")
PRICE = _fixed(lambda r: f"{r.randrange(1, 400)}.{r.choice((99, 95, 49, 0)):02d}")
QTY = _zipf([str(i) for i in range(1, 13)], s=1.6)
STREET = _fixed(lambda r: f"{r.randrange(1, 300)} {r.choice(_STREETS)} Street")
IP = _fixed(lambda r: f"{r.choice((81, 93, 172, 185, 203, 46))}.{r.randrange(256)}."
            f"{r.randrange(256)}.{r.randrange(1, 255)}")  # fmt: skip
NUM = [str(i) for i in range(POOL)]
SMALL = _zipf([str(i) for i in range(1, 999)], s=0.9)
MS = _fixed(lambda r: f"{r.randrange(1000):03d}")
DURATION = _fixed(lambda r: f"{r.lognormvariate(2.5, 1.0):.1f}")
BYTES = _fixed(lambda r: str(int(r.lognormvariate(8.5, 1.5))))
#: Time of day with ~1.3 s resolution (65,536 steps over 24 h).
TOD = [
    f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
    for s in (i * DAY // POOL for i in range(POOL))
]
DATES = [(DATE0 + timedelta(days=d)).isoformat() for d in range(5000)]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
CLF_DATES = [
    f"{d.day:02d}/{_MONTHS[d.month - 1]}/{d.year}"
    for d in (DATE0 + timedelta(days=i) for i in range(5000))
]


def _u16(rng: random.Random, n: int) -> memoryview:
    """``n`` uniform indices into a 65,536-entry pool, from one ``randbytes`` call."""
    return memoryview(rng.randbytes(2 * n)).cast("H")


def _hex(rng: random.Random, n: int, width: int) -> list[str]:
    """``n`` random lowercase hex tokens of ``width`` characters."""
    blob = rng.randbytes(n * width // 2 + 1).hex()
    return [blob[i : i + width] for i in range(0, n * width, width)]


def _words(rng: random.Random, n: int) -> list[str]:
    return list(map(WORD.__getitem__, _u16(rng, n)))


def _phrases(rng: random.Random, n: int, lo: int, hi: int) -> list[str]:
    """``n`` strings of ``lo``..``hi`` words each."""
    words = _words(rng, n * hi)
    lengths = _u16(rng, n)
    span = hi - lo + 1
    out: list[str] = []
    pos = 0
    for raw in lengths:
        k = lo + raw % span
        out.append(" ".join(words[pos : pos + k]))
        pos += k
    return out


# --------------------------------------------------------------------------
# Row generators: (rng, first_id, n, ctx) -> text of n rows
# --------------------------------------------------------------------------


@dataclass
class Ctx:
    """Row context: foreign-key ranges and how ids map to dates.

    Row ``i`` is dated ``DATES[day0 + (i - id0) // per_day]``, so a table spans
    its history in id order; ``mutate`` uses ``per_day`` = huge to date every
    new or changed row "today".
    """

    users: int = 50_000
    products: int = 2_000
    orders: int = 200_000
    per_day: int = 100
    day0: int = 0
    id0: int = 1

    def dates(self, start: int, n: int) -> list[str]:
        last = len(DATES) - 1
        pd, d0, i0 = self.per_day, self.day0, self.id0
        return [DATES[min(last, d0 + (i - i0) // pd)] for i in range(start, start + n)]

    def fk(self, rng: random.Random, n: int, upper: int) -> list[str]:
        """``n`` uniform ids in 1..upper (as strings)."""
        return [str(1 + (v * upper >> 16)) for v in _u16(rng, n)]


RowGen = Callable[[random.Random, int, int, Ctx], str]


def _sql_users(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    fi, la, dom, co, tod = (_u16(rng, n) for _ in range(5))
    hashes = base64.b64encode(rng.randbytes(40 * n)).decode()
    days = ctx.dates(start, n)
    return "".join([
        f"INSERT INTO public.users VALUES ({i}, '{FIRST_LC[f]}{LAST_LC[la[j]][:3]}{i}', "
        f"'{FIRST_LC[f]}.{LAST_LC[la[j]]}{i % 97}@{DOMAIN[dom[j]]}', "
        f"'$2b$12${hashes[53 * j : 53 * j + 53]}', '{FIRST[f]}', '{LAST[la[j]]}', "
        f"'{COUNTRY[co[j]]}', '{days[j]} {TOD[tod[j]]}+00', {'tf'[f & 1]});\n"
        for j, (i, f) in enumerate(zip(range(start, start + n), fi, strict=True))
    ])  # fmt: skip


def _sql_products(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    name, price, stock, tod = (_u16(rng, n) for _ in range(4))
    desc = _phrases(rng, n, 12, 40)
    days = ctx.dates(start, n)
    return "".join([
        f"INSERT INTO public.products VALUES ({i}, 'SKU-{i:06d}', '{PRODUCT[name[j]]}', "
        f"'{desc[j]}', {PRICE[price[j]]}, {SMALL[stock[j]]}, '{days[j]} {TOD[tod[j]]}+00');\n"
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


def _sql_orders(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    st, tot, street, city, pay, t1, t2 = (_u16(rng, n) for _ in range(7))
    users = ctx.fk(rng, n, ctx.users)
    days = ctx.dates(start, n)
    return "".join([
        f"INSERT INTO public.orders VALUES ({i}, {users[j]}, '{STATUS[st[j]]}', "
        f"{PRICE[tot[j]]}, 'EUR', '{STREET[street[j]]}, {CITY[city[j]]}', "
        f"'{PAYMENT[pay[j]]}', '{days[j]} {TOD[t1[j]]}+00', '{days[j]} {TOD[t2[j]]}+00');\n"
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


def _sql_order_items(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    qty, price = _u16(rng, n), _u16(rng, n)
    orders, products = ctx.fk(rng, n, ctx.orders), ctx.fk(rng, n, ctx.products)
    return "".join([
        f"INSERT INTO public.order_items VALUES ({i}, {orders[j]}, {products[j]}, "
        f"{QTY[qty[j]]}, {PRICE[price[j]]});\n"
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


def _sql_events(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    ev, path, ref, ip, ua, tod, ms = (_u16(rng, n) for _ in range(7))
    users = ctx.fk(rng, n, ctx.users)
    sess = _hex(rng, n, 16)
    days = ctx.dates(start, n)
    return "".join([
        f"INSERT INTO public.events VALUES ({i}, {users[j]}, '{EVENT[ev[j]]}', "
        f"'{{\"path\": \"/products/{NUM[path[j] >> 4]}\", \"ref\": \"{REFERRER[ref[j]]}\", "
        f"\"session\": \"{sess[j]}\"}}', '{IP[ip[j]]}', '{AGENT[ua[j]]}', "
        f"'{days[j]} {TOD[tod[j]]}.{MS[ms[j]]}+00');\n"
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


def _sql_comments(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    rating, tod = _u16(rng, n), _u16(rng, n)
    users, products = ctx.fk(rng, n, ctx.users), ctx.fk(rng, n, ctx.products)
    body = _phrases(rng, n, 6, 60)
    days = ctx.dates(start, n)
    return "".join([
        f"INSERT INTO public.comments VALUES ({i}, {users[j]}, {products[j]}, "
        f"{1 + rating[j] % 5}, '{body[j]}', '{days[j]} {TOD[tod[j]]}+00');\n"
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


@dataclass(frozen=True)
class Table:
    """One table of the SQL dump: DDL, row generator and share of the dump's bytes."""

    name: str
    columns: str
    rows: RowGen
    share: float
    row_bytes: int  # rough average, used to spread the rows over the history


TABLES: tuple[Table, ...] = (
    Table("users", "id bigint NOT NULL, username text NOT NULL, email text NOT NULL, "
          "password_hash text NOT NULL, first_name text, last_name text, country "
          "character(2), created_at timestamp with time zone NOT NULL, is_active boolean",
          _sql_users, 0.06, 230),
    Table("products", "id bigint NOT NULL, sku text NOT NULL, name text NOT NULL, "
          "description text, price numeric(10,2) NOT NULL, stock integer NOT NULL, "
          "created_at timestamp with time zone NOT NULL", _sql_products, 0.02, 250),
    Table("orders", "id bigint NOT NULL, user_id bigint NOT NULL, status text NOT NULL, "
          "total numeric(10,2) NOT NULL, currency character(3) NOT NULL, shipping_address "
          "text, payment_method text, created_at timestamp with time zone NOT NULL, "
          "updated_at timestamp with time zone NOT NULL", _sql_orders, 0.18, 210),
    Table("order_items", "id bigint NOT NULL, order_id bigint NOT NULL, product_id "
          "bigint NOT NULL, quantity integer NOT NULL, unit_price numeric(10,2) NOT NULL",
          _sql_order_items, 0.14, 75),
    Table("events", "id bigint NOT NULL, user_id bigint, event_type text NOT NULL, "
          "payload jsonb, ip inet, user_agent text, created_at timestamp with time zone "
          "NOT NULL", _sql_events, 0.44, 300),
    Table("comments", "id bigint NOT NULL, user_id bigint NOT NULL, product_id bigint "
          "NOT NULL, rating smallint, body text, created_at timestamp with time zone NOT "
          "NULL", _sql_comments, 0.16, 250),
)  # fmt: skip
TABLE_BY_NAME = {t.name: t for t in TABLES}

SQL_HEADER = """--
-- PostgreSQL database dump
--

-- Dumped from database version 15.4 (Debian 15.4-2.pgdg120+1)
-- Dumped by pg_dump version 15.4 (Debian 15.4-2.pgdg120+1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

"""


def _ddl(table: Table) -> str:
    cols = ",\n    ".join(c.strip() for c in table.columns.split(", ") if c.strip())
    return (
        f"--\n-- Name: {table.name}; Type: TABLE; Schema: public; Owner: app\n--\n\n"
        f"CREATE TABLE public.{table.name} (\n    {cols}\n);\n\n\n"
        f"ALTER TABLE public.{table.name} OWNER TO app;\n\n"
    )


def _data_header(table: Table) -> str:
    return (
        f"--\n-- Data for Name: {table.name}; Type: TABLE DATA; Schema: public; Owner: app\n--\n\n"
    )


def _sql_footer() -> str:
    parts = []
    for t in TABLES:
        parts.append(
            f"--\n-- Name: {t.name} {t.name}_pkey; Type: CONSTRAINT; Schema: public; Owner: app\n"
            f"--\n\nALTER TABLE ONLY public.{t.name}\n    ADD CONSTRAINT {t.name}_pkey "
            f"PRIMARY KEY (id);\n\n\n"
        )
    parts.append("--\n-- PostgreSQL database dump complete\n--\n\n")
    return "".join(parts)


# --- CSV exports, logs and upload text -------------------------------------

ORDERS_CSV_HEADER = (
    "order_id,created_at,customer_email,customer_name,country,city,status,items,"
    "total_eur,payment_method,coupon\n"
)
CUSTOMERS_CSV_HEADER = (
    "customer_id,email,first_name,last_name,country,city,signup_date,orders,"
    "lifetime_value_eur,newsletter\n"
)


def _csv_orders(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    fi, la, dom, co, city, st, qty, tot, pay, tod, cp = (_u16(rng, n) for _ in range(11))
    days = ctx.dates(start, n)
    coupons = _hex(rng, n, 8)
    return "".join([
        f"{i},{days[j]}T{TOD[tod[j]]}Z,{FIRST_LC[fi[j]]}.{LAST_LC[la[j]]}@{DOMAIN[dom[j]]},"
        f"{FIRST[fi[j]]} {LAST[la[j]]},{COUNTRY[co[j]]},{CITY[city[j]]},{STATUS[st[j]]},"
        f"{QTY[qty[j]]},{PRICE[tot[j]]},{PAYMENT[pay[j]]},"
        f"{coupons[j].upper() if cp[j] < 9000 else ''}\n"
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


def _csv_customers(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    fi, la, dom, co, city, cnt, ltv, nl = (_u16(rng, n) for _ in range(8))
    days = ctx.dates(start, n)
    return "".join([
        f"{i},{FIRST_LC[fi[j]]}.{LAST_LC[la[j]]}{i % 89}@{DOMAIN[dom[j]]},{FIRST[fi[j]]},"
        f"{LAST[la[j]]},{COUNTRY[co[j]]},{CITY[city[j]]},{days[j]},{SMALL[cnt[j]]},"
        f"{PRICE[ltv[j]]},{'true' if nl[j] & 3 else 'false'}\n"
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


def _access_log(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    ip, tod, meth, api, obj, code, size, ref, ua = (_u16(rng, n) for _ in range(9))
    last = len(CLF_DATES) - 1
    pd, d0, i0 = ctx.per_day, ctx.day0, ctx.id0
    return "".join([
        f'{IP[ip[j]]} - - [{CLF_DATES[min(last, d0 + (i - i0) // pd)]}:{TOD[tod[j]]} +0000] '
        f'"{METHOD[meth[j]]} {API[api[j]]}/{NUM[obj[j] >> 3]} HTTP/1.1" {HTTP[code[j]]} '
        f'{BYTES[size[j]]} "{REFERRER[ref[j]]}" "{AGENT[ua[j]]}"\n'
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


def _app_log(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    lvl, tod, ms, worker, meth, api, obj, code, dur = (_u16(rng, n) for _ in range(9))
    users = ctx.fk(rng, n, ctx.users)
    req = _hex(rng, n, 12)
    days = ctx.dates(start, n)
    return "".join([
        f"{days[j]}T{TOD[tod[j]]}.{MS[ms[j]]}Z {LEVEL[lvl[j]]:<5} [web-{worker[j] & 7}] "
        f"req={req[j]} user={users[j]} {METHOD[meth[j]]} {API[api[j]]}/{NUM[obj[j] >> 5]} "
        f"{HTTP[code[j]]} {DURATION[dur[j]]}ms\n"
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


def _json_rows(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    fi, la, dom, st, tot, tod, w1, w2 = (_u16(rng, n) for _ in range(8))
    uuids = _hex(rng, n, 32)
    days = ctx.dates(start, n)
    notes = _phrases(rng, n, 0, 12)
    return "".join([
        f'  {{"id": {i}, "uuid": "{uuids[j]}", "customer": {{"name": "{FIRST[fi[j]]} '
        f'{LAST[la[j]]}", "email": "{FIRST_LC[fi[j]]}@{DOMAIN[dom[j]]}"}}, '
        f'"status": "{STATUS[st[j]]}", "total": {PRICE[tot[j]]}, "currency": "EUR", '
        f'"tags": ["{WORD[w1[j]]}", "{WORD[w2[j]]}"], '
        f'"created_at": "{days[j]}T{TOD[tod[j]]}Z", "note": "{notes[j]}"}},\n'
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


def _csv_upload_rows(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    name, qty, price, st, tod = (_u16(rng, n) for _ in range(5))
    days = ctx.dates(start, n)
    return "".join([
        f"{i},{days[j]} {TOD[tod[j]]},SKU-{NUM[name[j] >> 5]},\"{PRODUCT[name[j]]}\","
        f"{QTY[qty[j]]},{PRICE[price[j]]},{STATUS[st[j]]}\n"
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


def _prose_rows(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    return "".join(p + "\n\n" for p in _phrases(rng, n, 20, 90))


def _markdown_rows(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    titles = _phrases(rng, n, 2, 6)
    paras = _phrases(rng, n, 25, 80)
    items = _phrases(rng, 3 * n, 3, 9)
    return "".join([
        f"## {titles[j].rstrip('.,').capitalize()}\n\n{paras[j]}\n\n"
        f"- {items[3 * j]}\n- {items[3 * j + 1]}\n- {items[3 * j + 2]}\n\n"
        for j in range(n)
    ])  # fmt: skip


def _html_rows(rng: random.Random, start: int, n: int, ctx: Ctx) -> str:
    name, price = _u16(rng, n), _u16(rng, n)
    desc = _phrases(rng, n, 8, 30)
    slug = _hex(rng, n, 6)
    return "".join([
        f'<div class="product-card" data-id="{i}">\n'
        f'  <a href="/products/{i}-{slug[j]}"><img src="/media/p/{i}/{slug[j]}.jpg" '
        f'alt="{PRODUCT[name[j]]}" loading="lazy"></a>\n'
        f'  <h3 class="product-title">{PRODUCT[name[j]]}</h3>\n'
        f'  <p class="price">&euro;{PRICE[price[j]]}</p>\n'
        f'  <p class="description">{desc[j]}</p>\n</div>\n'
        for j, i in enumerate(range(start, start + n))
    ])  # fmt: skip


@dataclass(frozen=True)
class TextKind:
    """How to write one kind of text upload: header, repeated rows, footer."""

    header: str
    rows: RowGen
    footer: str = ""


HTML_HEAD = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
    "<title>Shop - Catalogue</title>\n"
    '<link rel="stylesheet" href="/static/app.css">\n</head>\n<body>\n'
    '<main class="catalogue">\n'
)
TEXT_KINDS: dict[str, TextKind] = {
    "json": TextKind('{"orders": [\n', _json_rows, '  {"id": 0}\n]}\n'),
    "csv": TextKind("id,date,sku,product,quantity,unit_price,status\n", _csv_upload_rows),
    "txt": TextKind("", _prose_rows),
    "md": TextKind("# Notes\n\n", _markdown_rows),
    "html": TextKind(HTML_HEAD, _html_rows, "</main>\n</body>\n</html>\n"),
    "log": TextKind("", _app_log),
}


def _fill(rng: random.Random, gen: RowGen, size: int, start: int, ctx: Ctx) -> str:
    """Rows from ``gen`` until at least ``size`` characters (ASCII) are produced."""
    parts: list[str] = []
    total, per_row = 0, 2_000.0  # pessimistic: a small first batch calibrates
    while total < size:
        n = max(1, min(20_000, int((size - total) / per_row) + 1))
        chunk = gen(rng, start, n, ctx)
        parts.append(chunk)
        total += len(chunk)
        start += n
        per_row = len(chunk) / n
    return "".join(parts)


def text_upload(rng: random.Random, kind: str, size: int) -> bytes:
    """Text upload of roughly ``size`` bytes (whole rows, so slightly more)."""
    tk = TEXT_KINDS[kind]
    ctx = Ctx(per_day=40, day0=rng.randrange(1400), id0=1)
    start = rng.randrange(1, 900_000)
    body = _fill(rng, tk.rows, max(0, size - len(tk.header) - len(tk.footer)), start, ctx)
    return (tk.header + body + tk.footer).encode()


def binary_upload(rng: random.Random, kind: str, size: int) -> bytes:
    magic = MAGIC[kind]
    return magic + rng.randbytes(max(0, size - len(magic)))


def make_upload(rng: random.Random, kind: str, size: int) -> bytes:
    if kind in BINARY_KINDS:
        return binary_upload(rng, kind, size)
    return text_upload(rng, kind, size)


# --------------------------------------------------------------------------
# Writing files
# --------------------------------------------------------------------------


def _write(path: Path, data: bytes | str, mtime: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def _write_random(path: Path, rng: random.Random, size: int, magic: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(magic)
        left = size - len(magic)
        while left > 0:
            n = min(BLOCK, left)
            f.write(rng.randbytes(n))
            left -= n


def _write_near_duplicate(src: Path, dst: Path, rng: random.Random) -> None:
    """Copy ``src`` to ``dst`` with 1 KiB of new random bytes inserted mid-file."""
    mid = src.stat().st_size // 2
    with src.open("rb") as fin, dst.open("wb") as fout:
        fout.write(fin.read(mid))
        fout.write(rng.randbytes(KIB))
        shutil.copyfileobj(fin, fout, BLOCK)


def _write_rows(f: _Sink, rng: random.Random, gen: RowGen, size: int, start: int, ctx: Ctx) -> int:
    """Stream rows into ``f`` until ``size`` bytes; returns the next free id."""
    written, per_row = 0, 2_000.0  # pessimistic: a small first batch calibrates
    while written < size:
        n = max(1, min(20_000, int((size - written) / per_row) + 1))
        chunk = gen(rng, start, n, ctx)
        f.write(chunk.encode())
        written += len(chunk)
        start += n
        per_row = len(chunk) / n
    return start


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


def _write_sql_dump(path: Path, rng: random.Random, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with path.open("wb") as f:
        f.write(SQL_HEADER.encode())
        f.write("".join(_ddl(t) for t in TABLES).encode())
        for t in TABLES:
            budget = int(size * t.share)
            est_rows = max(1, budget // t.row_bytes)
            ctx = Ctx(
                users=counts.get("users", 1),
                products=counts.get("products", 1),
                orders=counts.get("orders", 1),
                per_day=max(1, est_rows // 1460),
            )
            f.write(_data_header(t).encode())
            counts[t.name] = _write_rows(f, rng, t.rows, budget, 1, ctx) - 1
            f.write(b"\n\n")
        f.write(_sql_footer().encode())


def _write_export(path: Path, rng: random.Random, size: int, header: str, gen: RowGen) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(per_day=max(1, size // 150 // 1460))
    with path.open("wb") as f:
        f.write(header.encode())
        _write_rows(f, rng, gen, size - len(header), 1, ctx)


EXPORTS: tuple[tuple[tuple[str, float], str, RowGen], ...] = (
    (EXPORT_ORDERS, ORDERS_CSV_HEADER, _csv_orders),
    (EXPORT_CUSTOMERS, CUSTOMERS_CSV_HEADER, _csv_customers),
    (EXPORT_ACCESS_LOG, "", _access_log),
)


# --------------------------------------------------------------------------
# Uploads plan
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    path: str
    kind: str
    size: int
    seed: int
    mtime: int
    dup_of: int | None = None


def _upload_name(rng: random.Random, kind: str) -> str:
    token = rng.getrandbits(32)
    if kind == "jpg":
        return f"IMG_{token % 10_000:04d}.jpg"
    if kind == "png":
        return f"screenshot-{token:08x}.png"
    if kind == "webp":
        return f"product-{token % 100_000}.webp"
    if kind == "pdf":
        return f"invoice-{token % 1_000_000:06d}.pdf"
    stem = ("export", "report", "notes", "page", "data", "draft")[token % 6]
    return f"{stem}-{token >> 8:06x}.{kind}"


def _month_epoch(month_index: int) -> int:
    """Epoch of the 1st of month ``month_index`` (0 = 2019-01), UTC."""
    year, month = 2019 + month_index // 12, month_index % 12 + 1
    return calendar.timegm((year, month, 1, 0, 0, 0, 0, 0, 0))


def _month_index(epoch: int) -> int:
    t = time.gmtime(epoch)
    return (t.tm_year - 2019) * 12 + t.tm_mon - 1


def _upload_size(rng: random.Random) -> int:
    return UPLOAD_MIN + int((UPLOAD_MAX - UPLOAD_MIN) * rng.random() ** UPLOAD_SKEW)


def plan_uploads(
    rng: random.Random,
    count: int,
    months: range,
    taken: set[str] | None = None,
    users: int | None = None,
) -> list[Upload]:
    """Paths, kinds, sizes, content seeds and mtimes of ``count`` uploads.

    Uploads come in batches of a few files by one user in one month (so
    directories hold ~5 files), later months get more of them (a growing site),
    and ~6% are copies of an earlier upload stored under another directory.
    ``taken`` holds paths that already exist and must not be reused; ``users``
    is the number of user directories to spread over (default ``count // 3``).
    """
    kinds = list(UPLOAD_KINDS)
    kind_cum = list(itertools.accumulate(UPLOAD_KINDS.values()))
    month_list = list(months)
    month_cum = list(itertools.accumulate(10 + i for i in range(len(month_list))))
    n_users = max(4, count // 3) if users is None else users
    n_dups = round(count * DUPLICATE_FRACTION) if count > 1 else 0
    dups = set(rng.sample(range(1, count), n_dups))
    taken = set() if taken is None else set(taken)
    plan: list[Upload] = []
    while len(plan) < count:
        month = rng.choices(month_list, cum_weights=month_cum)[0]
        user = rng.randrange(1, n_users + 1)
        folder = f"uploads/{2019 + month // 12}/{month % 12 + 1:02d}/u{user:05d}"
        for _ in range(min(count - len(plan), 12, 1 + int(rng.expovariate(0.25)))):
            i = len(plan)
            dup_of = None
            if i in dups:
                dup_of = rng.randrange(i)
                while (src_dup := plan[dup_of].dup_of) is not None:
                    dup_of = src_dup
                src = plan[dup_of]
                kind, size, name = src.kind, src.size, src.path.rsplit("/", 1)[1]
            else:
                kind = rng.choices(kinds, cum_weights=kind_cum)[0]
                size = _upload_size(rng)
                name = _upload_name(rng, kind)
            path = f"{folder}/{name}"
            k = 1
            while path in taken:
                stem, dot, ext = name.rpartition(".")
                path = f"{folder}/{stem}-{k}{dot}{ext}"
                k += 1
            taken.add(path)
            mtime = _month_epoch(month) + rng.randrange(28 * DAY)
            plan.append(Upload(path, kind, size, rng.getrandbits(64), mtime, dup_of))
    return plan


def write_uploads(root: Path, plan: list[Upload]) -> None:
    for up in plan:
        path = root / up.path
        if up.dup_of is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / plan[up.dup_of].path, path)
            os.utime(path, (up.mtime, up.mtime))
        else:
            _write(path, make_upload(random.Random(up.seed), up.kind, up.size), up.mtime)


# --------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------


def _scaled(mb: float, scale: float) -> int:
    return max(4 * KIB, int(mb * MB * scale))


def _settle_dir_mtimes(root: Path, only: set[Path] | None = None) -> None:
    """Give directories a deterministic mtime: that of the newest entry inside.

    Creating files stamps directories with the wall clock; resetting them keeps
    two trees generated from the same seed identical down to the metadata.
    ``only`` limits this to the given directories (mutate touches only the
    directories whose entries changed, so the rest keep their ctime too).
    """
    newest: dict[Path, int] = {}
    for dirpath, dirs, files in sorted(os.walk(root), key=lambda w: -len(w[0])):
        here = Path(dirpath)
        stamps = [int((here / f).stat().st_mtime) for f in files]
        stamps += [newest.get(here / d, int((here / d).stat().st_mtime)) for d in dirs]
        stamp = max(stamps, default=BASE_EPOCH)
        if only is None or here in only:
            newest[here] = stamp
            os.utime(here, (stamp, stamp))


def generate(root: Path, seed: int, scale: float) -> None:
    """Write the day-0 dataset into ``root`` (created; must be empty or absent)."""
    if scale <= 0:
        raise ValueError("scale must be positive")
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    master = random.Random(seed)
    seeds = {name: master.getrandbits(64) for name in ("uploads", "media", "exports", "sql")}

    plan = plan_uploads(random.Random(seeds["uploads"]), max(1, round(UPLOADS * scale)), range(60))
    write_uploads(root, plan)

    rng = random.Random(seeds["media"])
    for rel, mb in MEDIA:
        ext = rel.rsplit(".", 1)[1]
        _write_random(root / rel, rng, _scaled(mb, scale), MAGIC[ext])
    copy, original = NEAR_DUPLICATE
    _write_near_duplicate(root / original, root / copy, rng)

    rng = random.Random(seeds["exports"])
    for (rel, mb), header, gen in EXPORTS:
        _write_export(root / rel, rng, _scaled(mb, scale), header, gen)

    rel, mb = SQL_DUMP
    _write_sql_dump(root / rel, random.Random(seeds["sql"]), _scaled(mb, scale))

    stamp_rng = random.Random(seeds["media"] ^ seeds["sql"])
    for rel in [m for m, _ in MEDIA] + [copy, EXPORT_ORDERS[0], EXPORT_CUSTOMERS[0]]:
        t = BASE_EPOCH - stamp_rng.randrange(1, 90) * DAY
        os.utime(root / rel, (t, t))
    for rel in (EXPORT_ACCESS_LOG[0], SQL_DUMP[0]):
        t = BASE_EPOCH - stamp_rng.randrange(60, 3600)
        os.utime(root / rel, (t, t))
    _settle_dir_mtimes(root)


# --------------------------------------------------------------------------
# mutate
# --------------------------------------------------------------------------


def _iter_files(root: Path) -> Iterator[Path]:
    for dirpath, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            yield Path(dirpath, name)


def _sql_table(line: str) -> str | None:
    """Table name of an ``INSERT INTO public.X VALUES (...)`` line, else None."""
    if not line.startswith("INSERT INTO public."):
        return None
    return line[19 : line.index(" ", 19)]


def _sql_id(line: str) -> int:
    start = line.index("VALUES (") + 8
    return int(line[start : line.index(",", start)])


def _csv_id(line: str) -> int:
    return int(line[: line.index(",")])


@dataclass
class RewritePlan:
    """How to rewrite a row-oriented file: which rows change, how many are appended."""

    section: Callable[[str], str | None]  # data line -> section name, or None
    row_id: Callable[[str], int]
    gens: dict[str, RowGen]
    clusters: list[tuple[int, int]]  # byte ranges whose rows may change
    change_prob: float = 0.3
    append_fraction: float = 0.02


def _clusters(rng: random.Random, size: int, count: int, fraction: float) -> list[tuple[int, int]]:
    """``count`` byte ranges, each ``fraction`` of ``size`` long, in the middle 80%."""
    span = max(2 * KIB, int(size * fraction))
    starts = sorted(
        rng.randrange(size // 10, max(size // 10 + 1, size * 9 // 10)) for _ in range(count)
    )
    return [(s, s + span) for s in starts]


class _RowRewriter:
    """Per-file state while rewriting rows: last ids, row counts, cluster cursor."""

    def __init__(self, rng: random.Random, plan: RewritePlan, today: int) -> None:
        self.rng, self.plan, self.today = rng, plan, today
        self.seen: dict[str, int] = {}
        self.last_id: dict[str, int] = {}
        self.clusters = iter(plan.clusters)
        self.cluster = next(self.clusters, None)

    def ctx(self) -> Ctx:
        """Foreign keys point at rows seen so far; every new or changed row is dated today."""
        last = self.last_id
        return Ctx(users=last.get("users", 1), products=last.get("products", 1),
                   orders=last.get("orders", 1), per_day=1 << 40, day0=self.today)  # fmt: skip

    def in_cluster(self, pos: int) -> bool:
        while self.cluster is not None and pos > self.cluster[1]:
            self.cluster = next(self.clusters, None)
        return self.cluster is not None and pos >= self.cluster[0]

    def row(self, section: str, line: str, pos: int) -> str:
        """The row as it should be written: unchanged, or regenerated with the same id."""
        self.seen[section] = self.seen.get(section, 0) + 1
        row_id = self.plan.row_id(line)
        self.last_id[section] = row_id
        if self.in_cluster(pos) and self.rng.random() < self.plan.change_prob:
            return self.plan.gens[section](self.rng, row_id, 1, self.ctx())
        return line

    def appended(self, section: str) -> str:
        """New rows for the end of ``section``."""
        extra = max(1, round(self.seen[section] * self.plan.append_fraction))
        rows = self.plan.gens[section](self.rng, self.last_id[section] + 1, extra, self.ctx())
        self.last_id[section] += extra
        return rows


def _rewrite_rows(
    path: Path, rng: random.Random, plan: RewritePlan, today: int, mtime: int
) -> None:
    """Rewrite ``path`` (new inode, like a fresh export) with rows changed and appended.

    Rows inside ``plan.clusters`` are regenerated with the same id but new
    values (dated ``today``); each section grows by ``append_fraction`` new rows
    at its end. Everything else is copied byte-for-byte so most of the file
    still deduplicates against the previous version.
    """
    rewriter = _RowRewriter(rng, plan, today)
    tmp = path.with_name(path.name + ".tmp")
    pos = 0
    current: str | None = None
    with path.open("r", encoding="ascii", newline="") as fin, tmp.open("wb") as fout:
        for line in fin:
            pos += len(line)
            section = plan.section(line)
            if current is not None and section != current:
                fout.write(rewriter.appended(current).encode())
            out = line if section is None else rewriter.row(section, line, pos)
            fout.write(out.encode())
            current = section
        if current is not None:
            fout.write(rewriter.appended(current).encode())
    tmp.replace(path)
    os.utime(path, (mtime, mtime))


def _edit_text_in_place(path: Path, rng: random.Random, kind: str, mtime: int) -> None:
    """Replace a run of lines in the middle of a text upload, keeping the inode."""
    data = path.read_bytes()
    lo = data.find(b"\n", int(len(data) * rng.uniform(0.2, 0.6))) + 1
    hi = data.find(b"\n", lo + max(64, int(len(data) * rng.uniform(0.05, 0.2)))) + 1
    if lo <= 0 or hi <= lo:
        lo, hi = len(data), len(data)
    ctx = Ctx(per_day=1 << 40, day0=(mtime - DATE0_EPOCH) // DAY)
    fresh = _fill(rng, TEXT_KINDS[kind].rows, int((hi - lo) * rng.uniform(0.7, 1.3)) + 1, 1, ctx)
    with path.open("r+b") as f:
        f.write(data[:lo] + fresh.encode() + data[hi:])
        f.truncate()
    os.utime(path, (mtime, mtime))


def mutate(root: Path, seed: int) -> None:
    """Apply a deterministic "next day" change to a generated tree.

    * 3% of uploads modified: text ones edited in place (a run of lines
      replaced, same inode), binary ones rewritten with new content and size;
    * +1% new uploads (in a new month directory), -1% uploads deleted;
    * the SQL dump rewritten as a fresh dump would be: every table gains ~2%
      rows at its end and rows in a dozen small regions mid-file change, so most
      of the file still deduplicates;
    * ``exports/orders-2023.csv`` rewritten the same way, the access log
      appended to (~4%), everything else left alone.

    Roughly 5% of the files change but they hold over 40% of the bytes. New
    mtimes are one day after the newest file in the tree, so the result depends
    only on the input tree and ``seed``.
    """
    rng = random.Random(seed)
    files = list(_iter_files(root))
    now = (max(int(p.stat().st_mtime) for p in files) // DAY + 1) * DAY + 9 * 3600
    today = (now - DATE0_EPOCH) // DAY
    uploads = [p for p in files if p.relative_to(root).parts[0] == "uploads"]
    n = len(uploads)

    victims = rng.sample(uploads, round(n * 0.04))
    n_del = round(n * 0.01)
    # Entries added to or removed from a directory; only their parents get new mtimes.
    changed = [root / SQL_DUMP[0], root / EXPORT_ORDERS[0]]  # both rewritten via rename
    for p in victims[:n_del]:
        p.unlink()
        changed.append(p)
    for p in victims[n_del:]:
        kind = p.suffix.lstrip(".")
        t = now + rng.randrange(12 * 3600)
        if kind in BINARY_KINDS:
            _write(p, binary_upload(rng, kind, _upload_size(rng)), t)
        else:
            _edit_text_in_place(p, rng, kind, t)

    month = _month_index(now)
    existing = {p.relative_to(root).as_posix() for p in uploads}
    new_plan = [
        replace(u, mtime=now + rng.randrange(12 * 3600))
        for u in plan_uploads(
            rng, max(1, round(n * 0.01)), range(month, month + 1), existing, n // 3
        )
    ]
    for up in new_plan:
        new = root / up.path
        changed += [new, *(d for d in new.parents if not d.exists())]
    write_uploads(root, new_plan)

    sql = RewritePlan(
        section=_sql_table, row_id=_sql_id, gens={t.name: t.rows for t in TABLES},
        clusters=_clusters(rng, (root / SQL_DUMP[0]).stat().st_size, 12, 0.0005),
    )  # fmt: skip
    _rewrite_rows(root / SQL_DUMP[0], rng, sql, today, now + 3 * 3600)

    orders = root / EXPORT_ORDERS[0]
    csv = RewritePlan(
        section=lambda line: None if line.startswith("order_id,") else "rows",
        row_id=_csv_id, gens={"rows": _csv_orders},
        clusters=_clusters(rng, orders.stat().st_size, 6, 0.001), append_fraction=0.03,
    )  # fmt: skip
    _rewrite_rows(orders, rng, csv, today, now + 2 * 3600)

    log = root / EXPORT_ACCESS_LOG[0]
    extra = int(log.stat().st_size * 0.04)
    with log.open("ab") as f:
        _write_rows(f, rng, _access_log, extra, 1, Ctx(per_day=1 << 40, day0=today))
    os.utime(log, (now + 4 * 3600, now + 4 * 3600))
    _settle_dir_mtimes(root, {p.parent for p in changed})


# --------------------------------------------------------------------------
# Inspection and CLI
# --------------------------------------------------------------------------


def tree_size(root: Path) -> tuple[int, int]:
    """(number of files, total bytes) under ``root``."""
    count = total = 0
    for p in _iter_files(root):
        count += 1
        total += p.stat().st_size
    return count, total


def _category(rel: Path) -> str:
    if rel.parts[0] == "uploads":
        kind = rel.suffix.lstrip(".")
        return "uploads/binary" if kind in BINARY_KINDS else f"uploads/{kind}"
    return str(rel)


def stats(root: Path) -> dict[str, tuple[int, int, float]]:
    """Per category: files, bytes and zstd-3 ratio (each 4 MiB block compressed alone)."""
    # Imported here: only this diagnostic needs the (non-stdlib) zstandard package.
    cctx = importlib.import_module("zstandard").ZstdCompressor(level=3)
    acc: dict[str, list[int]] = {}
    for p in _iter_files(root):
        entry = acc.setdefault(_category(p.relative_to(root)), [0, 0, 0])
        entry[0] += 1
        with p.open("rb") as f:
            while block := f.read(4 * MIB):
                entry[1] += len(block)
                entry[2] += len(cctx.compress(block))
    return {k: (v[0], v[1], v[1] / max(1, v[2])) for k, v in sorted(acc.items())}


SMALL_MIN = 2_000
SMALL_MAX = 50_000


def generate_small(root: Path, seed: int, files: int) -> None:
    """An uploads folder of ``files`` unique small files of 2-50 kB (sizes uniform), the
    same mix of kinds and folder layout as the main tree's uploads; no duplicates."""
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root} is not empty")
    rng = random.Random(seed)
    plan = [
        dataclasses.replace(up, dup_of=None, size=rng.randint(SMALL_MIN, SMALL_MAX))
        for up in plan_uploads(rng, files, range(0, 60))
    ]
    write_uploads(root, plan)
    _settle_dir_mtimes(root)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write the day-0 tree into DIR (empty or absent)")
    gen.add_argument("dir", type=Path)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument("--scale", type=float, default=1.0, help="1.0 = ~2.1 GB")
    mut = sub.add_parser("mutate", help="apply a 'next day' change to DIR in place")
    mut.add_argument("dir", type=Path)
    mut.add_argument("--seed", type=int, default=2)
    small = sub.add_parser("small", help="write an uploads folder of small unique files")
    small.add_argument("dir", type=Path)
    small.add_argument("--seed", type=int, default=1)
    small.add_argument("--files", type=int, default=200_000)
    st = sub.add_parser("stats", help="files, bytes and zstd-3 ratio per category")
    st.add_argument("dir", type=Path)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    if args.command == "generate":
        generate(args.dir, args.seed, args.scale)
    elif args.command == "small":
        generate_small(args.dir, args.seed, args.files)
    elif args.command == "mutate":
        mutate(args.dir, args.seed)
    else:
        for cat, (files, size, ratio) in stats(args.dir).items():
            print(f"{cat:45} {files:7d} files {size / MB:10.1f} MB  zstd-3 {ratio:5.2f}x")
    files, total = tree_size(args.dir)
    print(
        f"{args.command}: {files} files, {total / MB:.1f} MB in {time.perf_counter() - t0:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
