#!/usr/bin/env bash
# Install everything safehold's tests need on a fresh Debian machine, then run them all:
# lint, types, the test suite (with restic as the format oracle) and a benchmark smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends --no-upgrade \
        python3 python3-venv python3-pip restic borgbackup time age \
        postgresql pgbackrest mariadb-server mariadb-client openssh-server openssh-client systemd
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

echo "== ruff"; .venv/bin/ruff check src tests bench
echo "== ruff format"; .venv/bin/ruff format --check src tests bench
echo "== mypy"; .venv/bin/mypy
echo "== import contract (layers, no circles)"; .venv/bin/lint-imports
# three workers, one test file each at a time (a file shares its servers): 17 min instead of 32 on 2 cores
echo "== pytest"; SAFEHOLD_NO_SKIPS=1 .venv/bin/pytest -q -rs -n "${PYTEST_WORKERS:-3}" --dist loadfile "$@"
echo "== benchmark smoke runs"; .venv/bin/python bench/run.py --smoke
.venv/bin/python bench/pg_bench.py --smoke
.venv/bin/python bench/drill_bench.py --smoke
.venv/bin/python bench/index_bench.py --smoke
.venv/bin/python bench/dbdiff_bench.py --smoke --out /tmp/dbdiff-smoke.json
.venv/bin/python bench/wal_bench.py --smoke
.venv/bin/python bench/pitr_bench.py --smoke
