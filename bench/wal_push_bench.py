#!/usr/bin/env python3
"""wal-push throughput: segments (and MB of WAL) per second into a local repository, as
PostgreSQL's archive_command would call it: one `safehold wal-push` process per segment.

  sync   `wal-push SEG`: the command returns once the segment is in the repository
         (a process start, the key derivation, the archive listing and the upload each time).
  async  `wal-push --async --spool DIR SEG`: the command returns once the segment is fsync'd
         in the spool; ONE pusher (started on demand) opens the repository once and uploads
         the spool in batches. Measured until the spool is empty again.

Segments are synthetic but shaped like WAL: a valid long page header (so wal-push accepts
them), then 16 MiB of which about a third is random (incompressible), the rest zero pages.
The repository uses the real key derivation (no SAFEHOLD_KDF_N shortcut).

    .venv/bin/python bench/wal_push_bench.py --segments 8
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEGMENT = 16 * 1024 * 1024
SYSID = 7_300_000_000_000_000_001


def make_segment(folder: Path, number: int) -> Path:
    name = f"00000001{number // 256:08X}{number % 256:08X}"
    header = struct.pack("<HHIQ", 0xD110, 0x0002, 1, number * SEGMENT)
    header += b"\0" * 8 + struct.pack("<QII", SYSID, SEGMENT, 8192)
    page = 8192
    body = bytearray(SEGMENT)
    body[: len(header)] = header
    for offset in range(page, SEGMENT, page * 3):
        body[offset : offset + page] = os.urandom(page)
    path = folder / name
    path.write_bytes(bytes(body))
    return path


def safehold(repo: Path, *args: str, env: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "safehold", "-q", "-r", str(repo), *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segments", type=int, default=8)
    count = parser.parse_args().segments
    root = Path(tempfile.mkdtemp(prefix="walbench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAFEHOLD_")}
    env["SAFEHOLD_PASSWORD"] = "bench bench bench"
    try:
        wal = root / "wal"
        wal.mkdir()
        segments = [make_segment(wal, n + 1) for n in range(count * 2)]
        for mode, chosen in (("sync", segments[:count]), ("async", segments[count:])):
            repo = root / f"repo-{mode}"
            safehold(repo, "init", env=env)
            spool = root / f"spool-{mode}"
            spool.mkdir()
            started = time.monotonic()
            for path in chosen:
                if mode == "sync":
                    safehold(repo, "wal-push", str(path), env=env)
                else:
                    safehold(repo, "wal-push", "--async", "--spool", str(spool), str(path),
                             env=env)  # fmt: skip
            acked = time.monotonic() - started
            while any(p.name[0] != "." and len(p.name) == 24 for p in spool.iterdir()):
                time.sleep(0.05)
            total = time.monotonic() - started
            mib = count * SEGMENT / (1024 * 1024)
            print(f"{mode:5}: {count} segments ({mib:.0f} MiB) acknowledged in {acked:.2f} s "
                  f"({count / acked:.2f} seg/s), in the repository after {total:.2f} s "
                  f"({count / total:.2f} seg/s, {mib / total:.1f} MiB/s)")  # fmt: skip
            lock = spool / "pusher.lock"
            if lock.exists() and lock.read_text().strip():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(lock.read_text().split()[0]), 15)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
