#!/usr/bin/env bash
# The first five minutes, scripted. A sample app (a SQLite database and an uploads folder)
# gets a plan, one backup command saves both into one snapshot in a repository in a local
# folder (no server), and one command per source restores them into NEW places, verified.
# Everything lands in ./demo/ ; delete it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && ! python3 -m venv --help >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends python3-venv
fi
[ -x .venv/bin/safehold ] || { python3 -m venv .venv && .venv/bin/python -m pip install -q -e .; }
SAFEHOLD="$PWD/.venv/bin/safehold"
PY="$PWD/.venv/bin/python"

rm -rf demo && mkdir -p demo/shop/uploads/2026/01 && cd demo/shop
"$PY" - <<'PY'
import os, random, sqlite3
rng = random.Random(7)
with sqlite3.connect("app.sqlite3") as db:
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, created_at TEXT)")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER, total REAL)")
    db.executemany("INSERT INTO users (email, created_at) VALUES (?, datetime('now'))",
                   [(f"user{i}@shop.test",) for i in range(2000)])
    db.executemany("INSERT INTO orders (user_id, total) VALUES (?, ?)",
                   [(rng.randint(1, 2000), round(rng.uniform(5, 500), 2)) for _ in range(10000)])
for i in range(200):
    with open(f"uploads/2026/01/avatar-{i}.png", "wb") as f:
        f.write(rng.randbytes(rng.randint(2_000, 60_000)))
PY

# The repository password: in real life from a password manager (SAFEHOLD_PASSWORD_COMMAND).
export SAFEHOLD_PASSWORD="demo-only-passphrase-keep-yours-in-a-password-manager"

set -x
$SAFEHOLD init --yes --app shop            # detects app.sqlite3 and uploads/, writes safehold.toml
$SAFEHOLD plan check                       # what will be backed up, and where
$SAFEHOLD backup --reason daily            # both sources, ONE snapshot
echo "a new upload" > uploads/2026/01/new.txt
$SAFEHOLD backup --reason predeploy --note "release 42"
$SAFEHOLD snapshots
$SAFEHOLD restore latest --source app --into ../restored/app.sqlite3        # a NEW file
$SAFEHOLD restore latest --source uploads --into ../restored/files          # a NEW folder
diff -r uploads ../restored/files/uploads
$SAFEHOLD restore latest --source app --into app.sqlite3 || true            # refused: production
$SAFEHOLD check --read-data
$SAFEHOLD drill                            # restore everything into a scratch place, check, time
$SAFEHOLD runbook                          # RUNBOOK.md + RUNBOOK.html from the plan and the drill
$SAFEHOLD status || true                   # the scorecard: a single local copy is not enough
set +x
echo
echo "demo OK: both sources restored into new places, verified against the backup, every"
echo "stored byte checked, a drill passed and RUNBOOK.md written. The repository is"
echo "demo/shop/backups/repository; restic reads it too: restic -r demo/shop/backups/repository snapshots"
