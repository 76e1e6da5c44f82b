#!/usr/bin/env bash
# The first five minutes, scripted: install safehold, back up a sample app folder into a
# repository in a local folder (no server), list it, restore it elsewhere, prove it is
# bit-exact, and verify every stored byte. Everything lands in ./demo/ ; delete it after.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && ! python3 -m venv --help >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends python3-venv
fi
[ -x .venv/bin/safehold ] || { python3 -m venv .venv && .venv/bin/python -m pip install -q -e .; }
SAFEHOLD=.venv/bin/safehold

rm -rf demo && mkdir -p demo/app/uploads/2026/01 demo/app/config
for i in $(seq 1 200); do
    printf '{"user": %d, "file": "avatar-%d.png", "note": "uploaded by user %d"}\n' "$i" "$i" "$i" \
        > "demo/app/uploads/2026/01/meta-$i.json"
done
head -c 3000000 /dev/urandom > demo/app/uploads/2026/01/photo.jpg
printf 'DATABASE_URL=postgresql://app@localhost/app\n' > demo/app/config/app.env

export SAFEHOLD_REPOSITORY="$PWD/demo/repository"
export SAFEHOLD_PASSWORD="demo-only-passphrase-keep-yours-in-a-password-manager"

set -x
$SAFEHOLD init
$SAFEHOLD backup demo/app --reason daily
echo "a new upload" > demo/app/uploads/2026/01/new.txt
$SAFEHOLD backup demo/app --reason predeploy --note "release 42"
$SAFEHOLD snapshots
$SAFEHOLD diff "$($SAFEHOLD snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')" latest
$SAFEHOLD restore latest --target demo/restored
diff -r demo/app demo/restored/demo/app
$SAFEHOLD check --read-data
set +x
echo
echo "demo OK: the backup restored bit-exact and every stored byte verified."
echo "the repository is in demo/repository (restic can read it too: restic -r demo/repository snapshots)."
