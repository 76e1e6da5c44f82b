"""safehold-only records stored in the repository under `safehold/<kind>/<id>`.

A record is a JSON document, framed and encrypted with the repository master key exactly like
a snapshot, and named by the SHA-256 of its stored bytes (docs/format.md section 12). Records
travel with the backups: whoever can open the repository can read them, restic ignores them.
Kinds in use: `drills` (restore-drill results), `holds` (app/holds.py).

A NAMED kind (`NAMED_KINDS`) is looked up by a key instead of by content: its id is the
HMAC-SHA256 of `<kind>\0<key>` under the repository's MAC keys (so the key, e.g. a WAL file
name, is not readable from the listing), its document repeats the key, and writing it again
replaces it. `wal-names` (pitr/store.py): where each archived WAL file is, one GET away.

This module is the object kind's encode/decode pair and its names; reading and writing go
through `Repository.save_record`, `load_records`, `load_record` and `delete_record`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from safehold.errors import IntegrityError

NAMED_KINDS = frozenset({"wal-names"})
_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")


def record_prefix(kind: str) -> str:
    """`safehold/<kind>/`; raises ValueError for a kind that is not a short lowercase name."""
    if not _KIND.fullmatch(kind):
        raise ValueError(f"invalid record kind {kind!r}")
    return f"safehold/{kind}/"


def encode_record(document: dict[str, Any]) -> bytes:
    """The plaintext of a record (before framing and encryption): canonical JSON."""
    return json.dumps(document, sort_keys=True, ensure_ascii=False).encode()


def decode_record(name: str, plaintext: bytes) -> dict[str, Any]:
    """The document of record `name`; raises IntegrityError if it is not a JSON object."""
    try:
        document = json.loads(plaintext)
    except ValueError as err:
        raise IntegrityError(f"{name} is corrupt: {err}") from None
    if not isinstance(document, dict):
        raise IntegrityError(f"{name} is corrupt: not a JSON object")
    return document
