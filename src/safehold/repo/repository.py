"""A repository: a backend, its master key and config, and the rules for reading and writing.

Every stored file except `config` is named by the SHA-256 of its bytes, and every read checks
that name before trusting the content, so corruption is always detected and named.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from safehold.backends.base import Backend, ObjectData, ObjectNotFoundError
from safehold.errors import (
    DamagedIndexError,
    IntegrityError,
    LockLostError,
    MissingObjectError,
    NotARepositoryError,
    RepositoryLockedError,
    RepositoryNotFoundError,
    SafeholdError,
    SnapshotNotFoundError,
    UnreadableKeyFilesError,
    UsageError,
    WrongPasswordError,
)
from safehold.repo import lock as lock_defaults
from safehold.repo.clock import Host, local_now
from safehold.repo.config import RepositoryConfig
from safehold.repo.crypto import AuthenticationError, MasterKey
from safehold.repo.damage import DamagedObject, warn_damaged_snapshot
from safehold.repo.format import (
    FileType,
    frame_unpacked,
    hash_id,
    is_valid_id,
    object_name,
    open_unpacked,
    unframe_unpacked,
)
from safehold.repo.gotypes import GoTime, format_time
from safehold.repo.index import (
    DECODE_ERRORS,
    IndexColumns,
    IndexDecoder,
    IndexFile,
    MasterIndex,
    decode_columns,
    split_into_index_files,
)
from safehold.repo.indexcache import CachedIndex, IndexCache, worth_rewriting, worth_writing
from safehold.repo.key import DEFAULT_KDF, KdfParams, KeyFile, UnreadableKeyError, wrap_master_key
from safehold.repo.lock import Lock, LockTimings
from safehold.repo.pack import BlobType, PackedBlob, decode_blob
from safehold.repo.packcache import PackCache
from safehold.repo.records import NAMED_KINDS, decode_record, encode_record, record_prefix
from safehold.repo.snapshot import Snapshot, is_wal_batch

Clock = Callable[[], GoTime]
_LOADER_THREADS = 4


@dataclass(frozen=True)
class KeyInfo:
    id: str
    username: str
    hostname: str
    created: GoTime | None  # optional in the format: rustic writes keys without it
    current: bool
    problem: str | None = None  # why the key file cannot be read, when it cannot


class Repository:
    def __init__(
        self,
        backend: Backend,
        master: MasterKey,
        config: RepositoryConfig,
        key_id: str,
        *,
        clock: Clock = local_now,
        host: Host | None = None,
    ) -> None:
        self.backend = backend
        self.master = master
        self.config = config
        self.key_id = key_id
        self.clock = clock
        self.host = host or Host.current()
        self._index: MasterIndex | None = None
        self.index_cache: IndexCache | None = None  # None: always decode the index files
        self._index_lock = threading.Lock()
        self.pack_cache: PackCache | None = None  # set while restoring from remote storage
        self.lock_timings: LockTimings | None = None  # None: lock.DEFAULT_LOCK_TIMINGS
        self._held_locks: tuple[_LockRefresher, ...] = ()
        self._data_read_observer: Callable[[int], None] | None = None
        self.damaged_snapshots: dict[str, DamagedObject] = {}  # by id, from list_snapshots

    # ----- creating and opening -------------------------------------------------------------

    @classmethod
    def init(
        cls,
        backend: Backend,
        password: bytes,
        *,
        kdf: KdfParams = DEFAULT_KDF,
        clock: Clock = local_now,
        host: Host | None = None,
        chunker_polynomial: int | None = None,
    ) -> Repository:
        """Create a new repository (format version 2) with one key for `password`;
        `chunker_polynomial` reuses another repository's chunker parameter."""
        host = host or Host.current()
        config = RepositoryConfig.new(chunker_polynomial)
        backend.create()
        master = MasterKey.generate()
        key_id, key_bytes = wrap_master_key(
            master,
            password,
            created=clock(),
            username=host.username,
            hostname=host.hostname,
            params=kdf,
        )
        backend.put(object_name(FileType.KEY, key_id), key_bytes)
        # The config is written last: a location with a config is a complete repository.
        backend.put("config", master.encrypt_object(config.encode()))
        return cls(backend, master, config, key_id, clock=clock, host=host)

    @classmethod
    def open(
        cls,
        backend: Backend,
        password: bytes,
        *,
        clock: Clock = local_now,
        host: Host | None = None,
    ) -> Repository:
        """Open with any key that `password` unlocks; errors say which of the checks failed."""
        if not backend.exists():
            raise RepositoryNotFoundError(f"no repository at {backend.location}")
        local = backend.capabilities.local_path
        if local is not None and not local.is_dir():
            raise NotARepositoryError(
                f"{backend.location} is a file, not a repository (a repository is a folder)"
            )
        try:
            config_data = backend.get("config")
        except ObjectNotFoundError:
            raise NotARepositoryError(
                f"{backend.location} is not a repository (it has no config file)"
            ) from None
        key_files = list(backend.list("keys/"))
        if not key_files:
            raise NotARepositoryError(f"{backend.location} has a config but no key files")
        unreadable: list[str] = []
        for info in key_files:
            key_id = info.name.rsplit("/", 1)[-1]
            try:
                raw = backend.get(info.name)
            except ObjectNotFoundError:
                continue  # removed since the listing (`key remove` elsewhere)
            # A key file is named by the hash of its bytes (as restic and rustic write it):
            # one that does not match its name is corrupt, and a password it refuses proves
            # nothing about the password.
            corrupt = is_valid_id(key_id) and hash_id(raw) != key_id
            try:
                master = KeyFile.decode(raw).unwrap(password)
            except UnreadableKeyError as err:
                state = "corrupt" if corrupt else "unreadable"
                unreadable.append(f"{info.name} is {state} ({err})")
                continue
            if master is None:
                if corrupt:
                    unreadable.append(
                        f"{info.name} is corrupt (its content does not match its name)"
                    )
                continue
            try:
                config = RepositoryConfig.decode(master.decrypt_object(config_data))
            except AuthenticationError:
                raise IntegrityError(
                    f"the config file of {backend.location} is corrupt (authentication failed)"
                ) from None
            if config.version not in (1, 2):
                raise NotARepositoryError(
                    f"{backend.location} has repository format version {config.version}",
                    hint="safehold reads format versions 1 and 2",
                )
            return cls(backend, master, config, key_id, clock=clock, host=host)
        readable = len(key_files) - len(unreadable)
        if not readable:
            raise UnreadableKeyFilesError(
                f"no key file of {backend.location} can be read, so no password can be tried: "
                + "; ".join(unreadable)
            )
        message = (
            f"wrong password: none of the {readable} readable key(s) of {backend.location} opens"
        )
        if unreadable:
            message += f" (also unreadable, not tried: {'; '.join(unreadable)})"
        raise WrongPasswordError(message)

    # ----- unpacked files (index, snapshots, locks, safehold/) ------------------------------

    def save_unpacked(self, file_type: FileType, plaintext: bytes) -> str:
        framed = frame_unpacked(plaintext, self.config.version)
        data = self.master.encrypt_object(framed)
        object_id = hash_id(data)
        self.backend.put(object_name(file_type, object_id), data)
        return object_id

    def load_unpacked(self, file_type: FileType, object_id: str) -> bytes:
        return self._load_encrypted(object_name(file_type, object_id), object_id)

    def _load_encrypted(
        self, name: str, object_id: str, missing: type[SafeholdError] = MissingObjectError
    ) -> bytes:
        """The plaintext of the unpacked object `name`, checked against its id."""
        try:
            data = self.backend.get(name)
        except ObjectNotFoundError:
            raise missing(f"{name} is missing from {self.backend.location}") from None
        return open_unpacked(self.master, data, object_id, name)

    def list_ids(self, file_type: FileType) -> list[str]:
        prefix = f"{file_type.value}/"
        ids = []
        for info in self.backend.list(prefix):
            object_id = info.name.rsplit("/", 1)[-1]
            if is_valid_id(object_id):
                ids.append(object_id)
        return ids

    def delete(self, file_type: FileType, object_id: str) -> None:
        if file_type is not FileType.LOCK:
            self.check_lock()  # prune and forget must not delete once another may take over
        self.backend.delete(object_name(file_type, object_id))

    # ----- index and blobs ----------------------------------------------------------------

    @property
    def index(self) -> MasterIndex:
        with self._index_lock:
            if self._index is None:
                self._index = self._load_index()
            return self._index

    def reload_index(self) -> MasterIndex:
        with self._index_lock:
            self._index = self._load_index()
            return self._index

    def _load_index(self) -> MasterIndex:
        """The master index, from the local index cache when one is set and still fits the
        repository's index files (indexcache.py), else decoded from the files (and cached)."""
        cache = self.index_cache
        if cache is None:
            return self.build_index()
        ids = self.list_ids(FileType.INDEX)
        listed = set(ids)
        cached = cache.load(self.master, self.config.id, listed)
        if cached is not None:
            merged = self._merge_new_index_files(cached, ids)
            if merged is not None:
                return merged
        index, hidden, superseded = self._decode_index_files(ids, None)
        if worth_writing(index.record_count(), len(ids)):
            cache.save(
                self.master,
                self.config.id,
                CachedIndex(
                    index, frozenset(listed - hidden), frozenset(hidden), frozenset(superseded)
                ),
            )
        else:
            cache.discard(self.config.id)  # if stale: too small to be worth a new one
        return index

    def _merge_new_index_files(self, cached: CachedIndex, ids: list[str]) -> MasterIndex | None:
        """The cached index with the index files listed since merged in; None when a new
        file supersedes a listed one (a prune in progress): then all is decoded again."""
        known = cached.files | cached.hidden
        hidden = cached.hidden | cached.superseded.intersection(ids)
        new = [index_id for index_id in ids if index_id not in known and index_id not in hidden]
        if not new:
            return cached.index
        assert self.index_cache is not None
        before = cached.index.record_count()
        index, superseded = self._merge_index_files(new, None, cached.index)
        if superseded.intersection(ids):
            return None
        if worth_rewriting(before, index.record_count() - before, len(new)):
            self.index_cache.save(
                self.master,
                self.config.id,
                CachedIndex(
                    index,
                    cached.files.union(new),
                    frozenset(hidden),
                    cached.superseded | superseded,
                ),
            )
        return index

    def build_index(
        self, on_error: Callable[[str, SafeholdError], None] | None = None
    ) -> MasterIndex:
        """The master index of every index file that no other index file supersedes.

        Files are decoded on loader threads and merged into the columns as they arrive, so
        the decoded files are never all in memory at once. An index file that names others as
        superseded (prune writes one) hides them: a prune interrupted before it deleted the
        old files leaves a repository that reads as if it had finished. `on_error` receives
        each unreadable file instead of the IntegrityError being raised (check uses it)."""
        return self._decode_index_files(self.list_ids(FileType.INDEX), on_error)[0]

    def _decode_index_files(
        self, ids: list[str], on_error: Callable[[str, SafeholdError], None] | None
    ) -> tuple[MasterIndex, set[str], set[str]]:
        """The master index of the files `ids`, the ones of them it left out as superseded,
        and every id the files name as superseded."""
        index, superseded = self._merge_index_files(ids, on_error)
        hidden = superseded.intersection(ids)
        if hidden:  # rare: only after an interrupted prune; read the live files again
            index, _ = self._merge_index_files([i for i in ids if i not in hidden], on_error)
        return index, hidden, superseded

    def _merge_index_files(
        self,
        ids: list[str],
        on_error: Callable[[str, SafeholdError], None] | None,
        into: MasterIndex | None = None,
    ) -> tuple[MasterIndex, set[str]]:
        """Decode and merge the files `ids` (into `into`, else a new index); returns the
        index and every id the files name as superseded."""
        index = MasterIndex() if into is None else into
        superseded: set[str] = set()
        # Before the loader threads: it may fork. Its workers check, decrypt, decompress,
        # decode and sort; the loader threads only read the files.
        with IndexDecoder(len(ids), self.master) as decoder:

            def load(index_id: str) -> IndexColumns | SafeholdError:
                try:
                    return self._decode_stored_index(index_id, decoder)
                except SafeholdError as err:
                    if on_error is None:
                        raise
                    return err

            def merge_oldest() -> None:
                index_id, future = pending.popleft()
                columns = future.result()
                if isinstance(columns, SafeholdError):
                    assert on_error is not None
                    on_error(index_id, columns)
                    return
                superseded.update(columns.supersedes)
                index.add_columns(columns)

            # A window of files in flight, merged in listing order as they complete: the
            # decoded files are never all in memory at once.
            pending: deque[tuple[str, Future[IndexColumns | SafeholdError]]] = deque()
            with ThreadPoolExecutor(_LOADER_THREADS) as pool:
                for index_id in ids:
                    pending.append((index_id, pool.submit(load, index_id)))
                    if len(pending) >= 2 * _LOADER_THREADS:
                        merge_oldest()
                while pending:
                    merge_oldest()
        return index, superseded

    def load_index_file(self, index_id: str) -> IndexColumns:
        """One index file, decoded into columns. Any damage (content that does not match its
        name, failed authentication, a parse error) is a DamagedIndexError, whose hint names
        `safehold repair index`; a missing file stays a MissingObjectError."""
        try:
            return decode_columns(self.load_unpacked(FileType.INDEX, index_id))
        except DamagedIndexError:
            raise
        except IntegrityError as err:
            raise DamagedIndexError(err.message) from None
        except DECODE_ERRORS as err:
            raise DamagedIndexError(f"index/{index_id} is corrupt: {err}") from None

    def _decode_stored_index(self, index_id: str, decoder: IndexDecoder) -> IndexColumns:
        """`load_index_file` with the checks, decryption and decoding on `decoder`: the same
        columns (with their sorted keys) and the same errors."""
        name = object_name(FileType.INDEX, index_id)
        try:
            data = self.backend.get(name)
        except ObjectNotFoundError:
            raise MissingObjectError(f"{name} is missing from {self.backend.location}") from None
        columns = decoder.decode_stored(data, index_id, name)
        if isinstance(columns, str):
            raise DamagedIndexError(columns)
        return columns

    def load_index_files(self) -> dict[str, IndexColumns]:
        """Every index file, superseded ones too, by id."""
        ids = self.list_ids(FileType.INDEX)
        with ThreadPoolExecutor(_LOADER_THREADS) as pool:
            return dict(zip(ids, pool.map(self.load_index_file, ids), strict=True))

    def save_index(self, packs: Mapping[str, list[PackedBlob]], supersedes: list[str]) -> list[str]:
        """Write index files for `packs`, and add them to the in-memory index. The files are
        built and written one at a time, so `packs` may be a lazy view of a large index."""
        self.check_lock()
        written = []
        files: Iterable[IndexFile] = split_into_index_files(packs)
        if supersedes:
            files = _first_or_empty(files)
        for number, index_file in enumerate(files):
            if number == 0:
                index_file.supersedes = list(supersedes)
            written.append(self.save_unpacked(FileType.INDEX, index_file.encode()))
        index = self.index
        for pack_id in packs:
            if pack_id not in index.packs:
                index.add_pack(pack_id, packs[pack_id])
        return written

    def write_pack(self, pack_id: str, data: ObjectData) -> None:
        self.check_lock()
        self.backend.put(object_name(FileType.PACK, pack_id), data)

    def read_blob_raw(self, pack_id: str, blob: PackedBlob) -> bytes:
        self.check_lock()  # the poll point of reading loops: restore, copy, prune, check
        name = object_name(FileType.PACK, pack_id)
        try:
            if self.pack_cache is not None:
                data = self.pack_cache.read(name, blob.offset, blob.length)
            else:
                data = self.backend.get_range(name, blob.offset, blob.length)
        except ObjectNotFoundError:
            raise MissingObjectError(
                f"pack {pack_id[:8]} holding blob {blob.id[:8]} is missing"
            ) from None
        if len(data) != blob.length:
            raise IntegrityError(f"pack {pack_id[:8]} is truncated (blob {blob.id[:8]})")
        return data

    def decode_blob_checked(
        self, pack_id: str, blob: PackedBlob, stored: bytes | memoryview
    ) -> bytes:
        """Decrypt, decompress and verify a blob against its id."""
        try:
            plaintext = decode_blob(self.master, blob, stored)
        except AuthenticationError:
            raise IntegrityError(
                f"blob {blob.id[:8]} in pack {pack_id[:8]} is corrupt (authentication failed)"
            ) from None
        except Exception as err:  # zstd raises its own error type
            raise IntegrityError(
                f"blob {blob.id[:8]} in pack {pack_id[:8]} is corrupt ({err})"
            ) from None
        if hash_id(plaintext) != blob.id:
            raise IntegrityError(
                f"blob {blob.id[:8]} in pack {pack_id[:8]} is corrupt (content hash mismatch)"
            )
        observer = self._data_read_observer
        if observer is not None and blob.type is BlobType.DATA:
            observer(len(plaintext))
        return plaintext

    def load_blob(self, blob_id: str, expected_type: BlobType | None = None) -> bytes:
        """Load a blob from any pack that holds it, falling back to other copies if corrupt."""
        locations = self.index.all_locations(blob_id)
        if not locations:
            raise MissingObjectError(f"blob {blob_id[:8]} is not in the index")
        last_error: Exception | None = None
        for location in locations:
            if expected_type is not None and location.blob.type is not expected_type:
                continue
            try:
                stored = self.read_blob_raw(location.pack_id, location.blob)
                plaintext = self.decode_blob_checked(location.pack_id, location.blob, stored)
            except (IntegrityError, MissingObjectError) as err:
                last_error = err
                continue
            return plaintext
        if last_error is not None:
            raise last_error
        raise MissingObjectError(f"blob {blob_id[:8]} of the expected type is not in the index")

    @contextmanager
    def observe_data_reads(self, observer: Callable[[int], None]) -> Iterator[None]:
        """Call `observer(size)` for every data blob decoded and verified meanwhile (by
        `load_blob` or a restore reading whole packs), from the thread that decoded it: how
        restores of any source report progress without each source doing it. One observer at
        a time."""
        previous, self._data_read_observer = self._data_read_observer, observer
        try:
            yield
        finally:
            self._data_read_observer = previous

    def report_data_read(self, size: int) -> None:
        """Tell the `observe_data_reads` observer about a data blob decoded and verified
        elsewhere (by a restore's worker process, for this process)."""
        observer = self._data_read_observer
        if observer is not None:
            observer(size)

    def detach_forked_copy(self) -> None:
        """In a worker process forked to read for this one (a restore's pack workers): key
        objects of its own (none shared with a thread of the parent), no lock checks (the
        parent holds and refreshes the lock, and checks it for every result; this copy's
        refresh state would never move), no observer (the parent reports what its workers
        decoded), no pack cache, and storage connections of its own (Backend.after_fork)."""
        self.backend.after_fork()
        self.master = MasterKey(self.master.encrypt, self.master.mac_k, self.master.mac_r)
        self._index_lock = threading.Lock()  # a parent thread may have held it at the fork
        self._held_locks = ()
        self._data_read_observer = None
        self.pack_cache = None

    # ----- snapshots ----------------------------------------------------------------------

    def save_snapshot(self, snapshot: Snapshot) -> str:
        self.check_lock()  # never a snapshot once the lock may have gone to another host
        snapshot.id = self.save_unpacked(FileType.SNAPSHOT, snapshot.encode())
        return snapshot.id

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        raw = self.load_unpacked(FileType.SNAPSHOT, snapshot_id)
        try:
            return Snapshot.decode(raw, snapshot_id)
        except (ValueError, KeyError) as err:
            raise IntegrityError(f"snapshots/{snapshot_id} is malformed: {err}") from None

    def list_snapshots(self, *, include_wal: bool = False) -> list[Snapshot]:
        """All intact snapshots, oldest first. A damaged snapshot file is skipped with a
        warning naming it (repo/damage.py) and kept in `damaged_snapshots`; one that vanished
        since the listing (a concurrent forget) is skipped quietly. WAL batches (tag
        `safehold-wal`, point-in-time recovery's archive) are storage, not backups: only
        listed with `include_wal` (prune, copy and the WAL archive itself need them)."""
        ids = self.list_ids(FileType.SNAPSHOT)

        def load(snapshot_id: str) -> Snapshot | DamagedObject | None:
            try:
                return self.load_snapshot(snapshot_id)
            except MissingObjectError:
                return None
            except IntegrityError as err:
                name = object_name(FileType.SNAPSHOT, snapshot_id)
                reason = err.message.removeprefix(f"{name} is ").strip()
                return DamagedObject(name, snapshot_id, reason)

        with ThreadPoolExecutor(_LOADER_THREADS) as pool:
            loaded = list(pool.map(load, ids))
        snapshots = [item for item in loaded if isinstance(item, Snapshot)]
        damaged = {item.object_id: item for item in loaded if isinstance(item, DamagedObject)}
        for object_id, item in sorted(damaged.items()):
            if object_id not in self.damaged_snapshots:
                warn_damaged_snapshot(item)
        self.damaged_snapshots = damaged
        if not include_wal:
            snapshots = [snapshot for snapshot in snapshots if not is_wal_batch(snapshot)]
        return sorted(snapshots, key=lambda snapshot: (snapshot.time.ns, snapshot.id))

    def find_damaged_snapshot(self, ref: str) -> DamagedObject | None:
        """The damaged snapshot (found by the last `list_snapshots`) whose id starts with
        `ref`, so that `forget` can remove it; None when no (or more than one) matches."""
        matches = [d for i, d in self.damaged_snapshots.items() if i.startswith(ref.lower())]
        return matches[0] if len(ref) >= 4 and len(matches) == 1 else None

    def find_snapshot(self, ref: str, snapshots: list[Snapshot] | None = None) -> Snapshot:
        """Resolve `latest`, a full id, an id prefix (unique), or a snapshot name."""
        candidates = snapshots if snapshots is not None else self.list_snapshots()
        if ref == "latest":
            if not candidates:
                raise SnapshotNotFoundError("the repository has no snapshots yet")
            return candidates[-1]
        named = [snapshot for snapshot in candidates if snapshot.name == ref]
        if named:
            return named[-1]
        matches = [snapshot for snapshot in candidates if snapshot.id.startswith(ref.lower())]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(
                f"snapshot id prefix {ref!r} is ambiguous ({len(matches)} snapshots match)",
                hint="give more characters of the id",
            )
        raise SnapshotNotFoundError(f"no snapshot matches {ref!r}")

    def load_tree(self, tree_id: str) -> list[Node]:
        from safehold.repo.tree import decode_tree

        raw = self.load_blob(tree_id, BlobType.TREE)
        try:
            return decode_tree(raw)
        except (ValueError, KeyError) as err:
            raise IntegrityError(f"tree {tree_id[:8]} is malformed: {err}") from None

    # ----- safehold records (safehold/<kind>/<id>, repo/records.py) -------------------------

    def save_record(self, kind: str, document: dict[str, Any]) -> str:
        """Store `document` as a new record of `kind`; returns its id."""
        data = self.master.encrypt_object(
            frame_unpacked(encode_record(document), self.config.version)
        )
        record_id = hash_id(data)
        self.backend.put(record_prefix(kind) + record_id, data)
        return record_id

    def list_record_ids(self, kind: str) -> list[str]:
        prefix = record_prefix(kind)
        return sorted(
            info.name[len(prefix) :]
            for info in self.backend.list(prefix)
            if is_valid_id(info.name[len(prefix) :])
        )

    def load_record(self, kind: str, record_id: str) -> dict[str, Any]:
        """One record; raises IntegrityError if it is missing, corrupt or not a JSON object."""
        name = record_prefix(kind) + record_id
        if kind in NAMED_KINDS:
            document = self._load_named(name)
            if document is None:
                raise IntegrityError(f"{name} is missing from {self.backend.location}")
            if self.named_record_id(kind, str(document.get("key"))) != record_id:
                raise IntegrityError(f"{name} is corrupt: its key does not match its name")
            return document
        return decode_record(name, self._load_encrypted(name, record_id, IntegrityError))

    def named_record_id(self, kind: str, key: str) -> str:
        """The id of the record of NAMED kind `kind` for `key` (see records.py)."""
        mac_key = self.master.mac_k + self.master.mac_r
        return hmac.new(mac_key, f"{kind}\0{key}".encode(), hashlib.sha256).hexdigest()

    def save_named_record(self, kind: str, key: str, document: dict[str, Any]) -> str:
        """Store (or replace) the record of NAMED kind `kind` for `key`; returns its id."""
        if kind not in NAMED_KINDS:
            raise ValueError(f"{kind!r} is not a named record kind")
        record_id = self.named_record_id(kind, key)
        plaintext = encode_record({**document, "key": key})
        data = self.master.encrypt_object(frame_unpacked(plaintext, self.config.version))
        self.backend.put(record_prefix(kind) + record_id, data)
        return record_id

    def load_named_record(self, kind: str, key: str) -> dict[str, Any] | None:
        """The record of NAMED kind `kind` for `key`, None when there is none (one GET);
        raises IntegrityError when it is damaged."""
        name = record_prefix(kind) + self.named_record_id(kind, key)
        document = self._load_named(name)
        if document is not None and document.get("key") != key:
            raise IntegrityError(f"{name} is corrupt: its key does not match its name")
        return document

    def _load_named(self, name: str) -> dict[str, Any] | None:
        try:
            data = self.backend.get(name)
        except ObjectNotFoundError:
            return None
        try:
            plaintext = unframe_unpacked(self.master.decrypt_object(data))
        except AuthenticationError:
            raise IntegrityError(f"{name} is corrupt: authentication failed") from None
        except ValueError as err:
            raise IntegrityError(f"{name} is corrupt: {err}") from None
        return decode_record(name, plaintext)

    def has_object(self, file_type: FileType, object_id: str) -> bool:
        """Whether the unpacked object exists (one stat, nothing read)."""
        try:
            self.backend.stat(object_name(file_type, object_id))
        except ObjectNotFoundError:
            return False
        return True

    def write_without_index(self) -> None:
        """For a writer whose data is known to be new (WAL: every page carries its position):
        do not read the repository's index; every blob this session saves is stored, even one
        the repository already has (a duplicate blob is valid in restic's format, and prune
        keeps one copy). The session's own blobs are still deduplicated among themselves."""
        with self._index_lock:
            if self._index is None:
                self._index = MasterIndex()

    def load_records(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """Every record of `kind` as (id, document), by id; raises IntegrityError naming the
        first corrupt record."""
        return [
            (record_id, self.load_record(kind, record_id))
            for record_id in self.list_record_ids(kind)
        ]

    def delete_record(self, kind: str, record_id: str) -> None:
        self.backend.delete(record_prefix(kind) + record_id)

    # ----- keys ---------------------------------------------------------------------------

    def add_key(self, password: bytes, kdf: KdfParams = DEFAULT_KDF) -> str:
        key_id, key_bytes = wrap_master_key(
            self.master,
            password,
            created=self.clock(),
            username=self.host.username,
            hostname=self.host.hostname,
            params=kdf,
        )
        self.backend.put(object_name(FileType.KEY, key_id), key_bytes)
        return key_id

    def list_keys(self) -> list[KeyInfo]:
        keys = []
        for key_id in self.list_ids(FileType.KEY):
            try:
                key_file = KeyFile.decode(self.backend.get(object_name(FileType.KEY, key_id)))
            except UnreadableKeyError as err:
                keys.append(KeyInfo(key_id, "", "", None, False, f"unreadable: {err}"))
                continue
            keys.append(
                KeyInfo(
                    key_id,
                    key_file.username,
                    key_file.hostname,
                    key_file.created,
                    key_id == self.key_id,
                )
            )
        return sorted(keys, key=lambda key: (key.created.ns if key.created else 0, key.id))

    def resolve_key(self, ref: str) -> str:
        matches = [key for key in self.list_ids(FileType.KEY) if key.startswith(ref)]
        if len(matches) != 1:
            raise UsageError(
                f"key {ref!r} matches {len(matches)} keys",
                hint="list keys with `safehold key list` and give a unique id prefix",
            )
        return matches[0]

    def remove_key(self, key_id: str) -> None:
        if key_id == self.key_id:
            raise UsageError(
                "refusing to remove the key this session is using",
                hint="open the repository with another key's password to remove this one",
            )
        if len(self.list_ids(FileType.KEY)) <= 1:
            raise UsageError("refusing to remove the last key: the repository would be lost")
        self.delete(FileType.KEY, key_id)

    def change_password(self, new_password: bytes, kdf: KdfParams = DEFAULT_KDF) -> str:
        """Add a key for the new password, then remove the current key (never zero keys)."""
        old = self.key_id
        new_id = self.add_key(new_password, kdf)
        self.key_id = new_id
        self.delete(FileType.KEY, old)
        return new_id

    # ----- locks --------------------------------------------------------------------------

    def list_locks(self) -> list[tuple[str, Lock | None]]:
        locks: list[tuple[str, Lock | None]] = []
        for lock_id in self.list_ids(FileType.LOCK):
            try:
                lock = Lock.decode(self.load_unpacked(FileType.LOCK, lock_id))
            except (IntegrityError, MissingObjectError, ValueError, KeyError):
                lock = None  # vanished meanwhile, or written by a process with another key
            locks.append((lock_id, lock))
        return locks

    def _conflicting_lock(self, exclusive: bool, own_id: str | None) -> Lock | None:
        now = self.clock().ns
        for lock_id, lock in self.list_locks():
            if lock_id == own_id or lock is None:
                continue
            if lock.is_stale(now, self.host.hostname):
                continue
            if lock.conflicts_with(exclusive):
                return lock
        return None

    def _write_lock(self, exclusive: bool) -> tuple[str, GoTime]:
        """Write a new lock of this process; returns its id and the time written inside it."""
        lock = Lock(
            self.clock(),
            exclusive,
            self.host.hostname,
            self.host.username,
            self.host.pid,
            self.host.uid,
            self.host.gid,
        )
        return self.save_unpacked(FileType.LOCK, lock.encode()), lock.time

    @contextmanager
    def locked(self, exclusive: bool) -> Iterator[None]:
        """Hold a restic-compatible lock for the duration, refreshed in the background.

        Raises RepositoryLockedError when another process holds a conflicting lock. When the
        lock cannot be kept fresh (see LockTimings) or someone removes it, check_lock raises
        LockLostError from then on, so the operation stops at its next write or read.
        """
        blocking = self._conflicting_lock(exclusive, None)
        if blocking is not None:
            raise RepositoryLockedError(f"repository is locked: {blocking.describe()}")
        written_at = time.monotonic()  # staleness counts from the time inside the lock file
        lock_id, lock_time = self._write_lock(exclusive)
        blocking = self._conflicting_lock(exclusive, lock_id)
        if blocking is not None:
            self.delete(FileType.LOCK, lock_id)
            raise RepositoryLockedError(f"repository is locked: {blocking.describe()}")
        timings = self.lock_timings or lock_defaults.DEFAULT_LOCK_TIMINGS
        holder = _LockRefresher(self, exclusive, lock_id, timings, written_at, lock_time)
        holder.start()
        self._held_locks = (*self._held_locks, holder)
        try:
            yield
        finally:
            self._held_locks = tuple(held for held in self._held_locks if held is not holder)
            holder.stop()

    def check_lock(self) -> None:
        """Raise LockLostError if a lock this process holds here could not be kept fresh.

        Cheap (no storage access): called before every pack, index and snapshot write, every
        delete but of a lock, and every blob read; loops that may run long without any of
        those (the backup's walk) call it too. Does nothing when no lock is held.
        """
        for holder in self._held_locks:
            holder.check()

    def stale_lock_ids(self, include_live: bool = False) -> list[str]:
        """Locks that `remove_stale_locks` would delete: stale or unreadable ones (all of
        them with `include_live`)."""
        now = self.clock().ns
        return [
            lock_id
            for lock_id, lock in self.list_locks()
            if include_live or lock is None or lock.is_stale(now, self.host.hostname)
        ]

    def remove_stale_locks(self, remove_all: bool = False) -> int:
        """Delete stale (or all) locks; returns how many are really gone. A write-only login
        may be refused quietly (the backends leave refused lock deletes to go stale), so the
        count comes from listing the locks again, not from the delete calls."""
        doomed = self.stale_lock_ids(remove_all)
        for lock_id in doomed:
            self.delete(FileType.LOCK, lock_id)
        if not doomed:
            return 0
        remaining = set(self.list_ids(FileType.LOCK))
        return sum(1 for lock_id in doomed if lock_id not in remaining)


def _first_or_empty(files: Iterable[IndexFile]) -> Iterator[IndexFile]:
    """`files`, or one empty index file if there are none (to carry a supersedes list)."""
    empty = True
    for index_file in files:
        empty = False
        yield index_file
    if empty:
        yield IndexFile()


class _LockRemovedError(Exception):
    """Our lock file is gone: someone ran `unlock --remove-all` (or deleted it by hand)."""


class _LockRefresher:
    """Replaces the lock with a fresh one every refresh interval, as restic does; a failed
    refresh is retried until the give-up deadline, then the lock counts as lost.

    The thread cannot raise into the operation, so it records the loss; `check` (on the
    operation's threads) raises it, and also notices on its own a deadline that passed while
    a refresh hangs in the storage. A lock found removed is lost at once, never recreated.
    """

    def __init__(
        self,
        repo: Repository,
        exclusive: bool,
        lock_id: str,
        timings: LockTimings,
        written_at: float,
        written_time: GoTime,
    ) -> None:
        self._repo = repo
        self._exclusive = exclusive
        self._timings = timings
        self.lock_id = lock_id
        self._refreshed_monotonic = written_at
        self._refreshed_at = written_time  # the time inside the lock file, for messages
        self._failure: str | None = None  # why the last refresh failed
        self._lost: str | None = None  # set once: by the refresh thread, or past the deadline
        self._leftovers: list[str] = []  # replaced lock files whose delete failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-refresh", daemon=True)
        self._mutex = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def check(self) -> None:
        reason = self._lost_reason()
        if reason is not None:
            raise LockLostError(self._message(reason))  # a new error for every thread

    def _lost_reason(self) -> str | None:
        """Why the lock is lost, or None. Once lost, always lost: a refresh that hung past the
        deadline and then succeeds does not take back what check() already raised."""
        if self._lost is None and self._overdue() > self._timings.give_up_after_s:
            self._lost = self._failure or "the storage did not answer in time"
        return self._lost

    def _message(self, reason: str) -> str:
        kind = "exclusive" if self._exclusive else "shared"
        return (
            f"repository lock lost: could not refresh the {kind} lock on "
            f"{self._repo.backend.location} since {format_time(self._refreshed_at)}: {reason}"
        )

    def _overdue(self) -> float:
        return time.monotonic() - self._refreshed_monotonic

    def _run(self) -> None:
        wait = self._timings.refresh_interval_s
        while not self._stop.wait(wait):
            with self._mutex:
                if self._stop.is_set():
                    return
                wait = self._refresh()
                if self._lost is not None:
                    return

    def _refresh(self) -> float:
        """One attempt; returns how long to wait before the next one."""
        if self._lost_reason() is not None:  # no attempt starts after the deadline
            return 0
        try:
            self._replace_lock()
        except _LockRemovedError:
            name = object_name(FileType.LOCK, self.lock_id)
            self._lost = f"its lock file {name} was removed by another process"
            return 0
        except Exception as err:  # storage errors of any backend: retried until the deadline
            self._failure = f"the last attempt failed: {err}"
            remaining = self._timings.give_up_after_s - self._overdue()
            if remaining <= 0:
                self._lost = self._failure
                return 0
            return min(self._timings.retry_interval_s, remaining)
        self._failure = None
        return self._timings.refresh_interval_s

    def _replace_lock(self) -> None:
        """Write a new lock, then delete the old one; raises _LockRemovedError if the old one
        is gone before or while the new one is written (restic's RefreshStaleLock checks
        the same way), leaving no lock of ours behind."""
        self._require_present(self.lock_id)
        started = time.monotonic()
        new_id, started_at = self._repo._write_lock(self._exclusive)
        try:
            self._require_present(self.lock_id)
        except _LockRemovedError:
            with suppress(Exception):  # if this fails too, the new lock goes stale by itself
                self._repo.delete(FileType.LOCK, new_id)
            raise
        old_id, self.lock_id = self.lock_id, new_id
        self._refreshed_monotonic, self._refreshed_at = started, started_at
        try:
            self._repo.delete(FileType.LOCK, old_id)
        except Exception:  # the new lock holds; the old one goes stale, or goes in stop()
            self._leftovers.append(old_id)

    def _require_present(self, lock_id: str) -> None:
        try:
            self._repo.backend.stat(object_name(FileType.LOCK, lock_id))
        except ObjectNotFoundError:
            raise _LockRemovedError from None

    def stop(self) -> None:
        """Delete the lock. After a loss, failures to delete are not raised: they would hide
        the LockLostError the operation is leaving with (the lock goes stale by itself)."""
        with self._mutex:
            self._stop.set()
            for old_id in self._leftovers:
                with suppress(Exception):
                    self._repo.delete(FileType.LOCK, old_id)
            if self._lost_reason() is None:
                self._repo.delete(FileType.LOCK, self.lock_id)
                return
            with suppress(Exception):
                self._repo.delete(FileType.LOCK, self.lock_id)


from safehold.repo.tree import Node  # noqa: E402  (type used in annotations above)
