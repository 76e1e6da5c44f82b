"""safehold-only records stored in the repository under `safehold/<kind>/<id>`.

A record is a JSON document, framed and encrypted with the repository master key exactly like
a snapshot, and named by the SHA-256 of its stored bytes (docs/format.md section 12). Records
travel with the backups: whoever can open the repository can read them, restic ignores them.
Kinds in use: `drills` (restore-drill results).
"""

from __future__ import annotations

import json
import re
from typing import Any

from safehold.backends.base import ObjectNotFoundError
from safehold.errors import IntegrityError
from safehold.repo.crypto import AuthenticationError
from safehold.repo.format import (
    frame_unpacked,
    hash_id,
    is_valid_id,
    unframe_unpacked,
)
from safehold.repo.repository import Repository

_KIND = re.compile(r"[a-z][a-z0-9-]{0,31}")


def _prefix(kind: str) -> str:
    if not _KIND.fullmatch(kind):
        raise ValueError(f"invalid record kind {kind!r}")
    return f"safehold/{kind}/"


def save_record(repo: Repository, kind: str, document: dict[str, Any]) -> str:
    """Store `document` as a new record of `kind`; returns its id."""
    plaintext = json.dumps(document, sort_keys=True, ensure_ascii=False).encode()
    data = repo.master.encrypt_object(frame_unpacked(plaintext, repo.config.version))
    record_id = hash_id(data)
    repo.backend.put(_prefix(kind) + record_id, data)
    return record_id


def list_record_ids(repo: Repository, kind: str) -> list[str]:
    prefix = _prefix(kind)
    return sorted(
        info.name[len(prefix) :]
        for info in repo.backend.list(prefix)
        if is_valid_id(info.name[len(prefix) :])
    )


def load_record(repo: Repository, kind: str, record_id: str) -> dict[str, Any]:
    name = _prefix(kind) + record_id
    try:
        data = repo.backend.get(name)
    except ObjectNotFoundError:
        raise IntegrityError(f"{name} is missing from {repo.backend.location}") from None
    if hash_id(data) != record_id:
        raise IntegrityError(f"{name} is corrupt: its content does not match its name")
    try:
        document = json.loads(unframe_unpacked(repo.master.decrypt_object(data)))
    except AuthenticationError:
        raise IntegrityError(f"{name} is corrupt: authentication failed") from None
    except ValueError as err:
        raise IntegrityError(f"{name} is corrupt: {err}") from None
    if not isinstance(document, dict):
        raise IntegrityError(f"{name} is corrupt: not a JSON object")
    return document


def load_records(repo: Repository, kind: str) -> list[tuple[str, dict[str, Any]]]:
    """Every record of `kind` as (id, document); unreadable ones are skipped by the caller's
    choice: this raises IntegrityError naming the first corrupt record."""
    return [
        (record_id, load_record(repo, kind, record_id)) for record_id in list_record_ids(repo, kind)
    ]


def delete_record(repo: Repository, kind: str, record_id: str) -> None:
    repo.backend.delete(_prefix(kind) + record_id)
