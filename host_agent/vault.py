"""The evidence vault: append-only, tamper-evident, byte-exact storage of signed records.

Art. 9 of the regulation: footage is kept whole and nobody may cut or alter the original data.
The vault stores every record exactly as the recorder signed it, and the segment bytes exactly
as received, so anyone holding a device's public key can re-check the whole chain later
(`Vault.verify`, `bodycam vault verify`). The device deletes a segment only after
`Vault.commit` has returned the record hash: the durable receipt.

On-disk layout (layout version 1)::

    <root>/
      vault.sqlite                  index (SQLite, WAL, foreign keys on); -wal/-shm beside it
      objects/<h[:2]>/<h>           segment bytes, named by the lowercase hex SHA-256 <h> of
                                    their content; read-only (0444); identical content is
                                    stored once
      manifests/<device_id>/<seq:08d>.cose
                                    each signed record (COSE_Sign1) byte-exact as received;
                                    read-only (0444); seq starts at 1
      quarantine/<utc>-<device>-<seq>/
                                    what arrived but is not good evidence, kept as it came:
                                    record.cose (if any), segment.bin (if any), reason.json
                                    (code, detail, hashes); never counted as evidence
      tmp/                          segments being received; a file here is not evidence and
                                    is removed when its transfer ends without a commit (files
                                    left by a crash are removed a day later at open)

Index tables (vault.sqlite):

    meta(key, value)                layout version ("layout" = "bodycam-vault/1")
    devices(device_id, public_key, key_id, enrolled_at, enrolled_by, note)
    records(device_id, seq, kind, record_sha256, prev, segment_sha256, size, t_start, t_end,
            clock_state, tracks, policy, truncated, stored_at)   PRIMARY KEY(device_id, seq)
    events(device_id, seq, kind, name, t, phase_row, case_no, officer, detail)
                                    the event and gap records, indexed by case for reports
    quarantine(id, device_id, seq, code, detail, path, at)
    dockings(id, device_id, at, report)                       report = JSON text

`devices`, `records`, `quarantine` and `dockings` are append-only in the database itself:
triggers abort any UPDATE or DELETE from any connection (the vault's own connection also turns
on recursive_triggers, so its INSERT OR REPLACE cannot delete either). Someone with write access
to the file can still drop triggers or edit rows: `verify` reports a missing trigger, and any
row that no longer matches the signed files. A device key is never replaced.

Times are UTC ISO-8601 strings (`2024-05-01T08:30:00.123456Z`); t_start/t_end are the device's
µs clock as signed.

Commit order (each step durable before the next): segment data fsynced, renamed into
objects/ (0444); record written to a temp file, fsynced, renamed into manifests/ (0444);
directories fsynced; then the index row in one SQLite transaction (synchronous=FULL). The
whole commit holds SQLite's write lock, so two processes cannot interleave commits. A crash
before the index row leaves at most an unindexed object or manifest that `verify` reports and
that a retry of the same record reuses.

The database is an index, not the proof: the proof is the signed chain in manifests/ plus the
objects they name. `verify` re-checks all of it from the files.

Thread-safety: a Vault holds one sqlite3 connection and must be used from the thread that
opened it; open one Vault per thread (or process) on the same root.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import queue
import re
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from host_agent import evidence
from protocol import manifest

LAYOUT = "bodycam-vault/1"
DB_NAME = "vault.sqlite"
READ_ONLY = 0o444
CHUNK = 1 << 20
STALE_TMP_S = 24 * 3600

_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_OBJECT_NAME = re.compile(r"[0-9a-f]{64}")
_MANIFEST_NAME = re.compile(r"([0-9]{8})\.cose")
_APPEND_ONLY = ("devices", "records", "events", "quarantine", "dockings")

_SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    key_id BLOB NOT NULL,
    enrolled_at TEXT NOT NULL,
    enrolled_by TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE records (
    device_id TEXT NOT NULL REFERENCES devices(device_id),
    seq INTEGER NOT NULL CHECK (seq >= 1),
    kind TEXT NOT NULL,
    record_sha256 BLOB NOT NULL,
    prev BLOB NOT NULL,
    segment_sha256 BLOB,
    size INTEGER,
    t_start INTEGER,
    t_end INTEGER,
    clock_state TEXT,
    tracks TEXT,
    policy TEXT NOT NULL,
    truncated INTEGER,
    stored_at TEXT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE TABLE events (
    device_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    t INTEGER NOT NULL,
    phase_row INTEGER,
    case_no TEXT,
    officer TEXT,
    detail TEXT NOT NULL CHECK (json_valid(detail)),
    PRIMARY KEY (device_id, seq),
    FOREIGN KEY (device_id, seq) REFERENCES records(device_id, seq)
);
CREATE INDEX events_by_case ON events(case_no, t);
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT,
    seq INTEGER,
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    path TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE dockings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT,
    at TEXT NOT NULL,
    report TEXT NOT NULL CHECK (json_valid(report))
);
""" + "".join(
    f"""
CREATE TRIGGER {t}_no_update BEFORE UPDATE ON {t}
BEGIN SELECT RAISE(ABORT, '{t} is append-only: evidence may not be altered'); END;
CREATE TRIGGER {t}_no_delete BEFORE DELETE ON {t}
BEGIN SELECT RAISE(ABORT, '{t} is append-only: evidence may not be removed'); END;
"""
    for t in _APPEND_ONLY
)


class VaultError(Exception):
    """The vault refused an operation, or is not a vault."""


@dataclass(frozen=True)
class Problem:
    """One thing `Vault.verify` found wrong; `path` is relative to the vault root."""

    code: str
    path: str
    detail: str


def _hex(obj: object) -> str:
    if isinstance(obj, bytes):
        return obj.hex()
    raise TypeError(f"not JSON: {type(obj).__name__}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir_durable(path: Path) -> None:
    """Create `path` (and missing parents), fsyncing each parent that gained an entry."""
    if path.is_dir():
        return
    _mkdir_durable(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    _fsync_dir(path.parent)


def _hash_file(path: Path) -> tuple[bytes, int]:
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            h.update(view[:n])
            size += n
    return h.digest(), size


def _write_durable(tmp_dir: Path, dest: Path, data: bytes) -> None:
    """Write `data` to a temp file, make it read-only, fsync, rename onto `dest`."""
    tmp = tmp_dir / (uuid.uuid4().hex + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, READ_ONLY)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, dest)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:64] or "_"


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Incoming:
    """A segment being received into the vault's tmp/ directory; a context manager.

    Leaving the `with` block without a commit or quarantine removes the temp file.

    `write` copies each piece into a batch; a full batch is hashed in the caller's thread and
    handed through a bounded queue to a writer thread that writes it to the temp file, so
    hashing and writing overlap (both release the GIL). `sha256` and `size` always cover
    every byte passed to `write`; `_seal` waits for the writer to finish, then fsyncs as
    before: nothing is durable, nor named, earlier than without the thread. A write error in
    the writer thread (ENOSPC, EIO) is raised by the next `write`, or by `_seal`.
    """

    BATCH = 1 << 18  # bytes per write handed to the writer thread
    DEPTH = 8  # batches queued for the writer before `write` blocks (≤ 2 MiB in flight)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        # closed by _seal()/discard(); mode as open(path, "xb") would give
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        self._batch = bytearray()
        self._queue: queue.Queue[bytearray | None] | None = None
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._sealed = False
        self._consumed = False

    @property
    def sha256(self) -> bytes:
        """SHA-256 of the bytes written so far."""
        if not self._batch:
            return self._hash.digest()
        h = self._hash.copy()
        h.update(self._batch)
        return h.digest()

    def write(self, data: bytes | memoryview) -> None:
        if self._sealed:
            raise VaultError("segment transfer already finished")
        if self._error is not None:
            raise self._error
        self._batch += data  # a copy: the caller may reuse its buffer at once
        self.size += len(data)
        if len(self._batch) >= self.BATCH:
            self._hand_over()

    def _hand_over(self) -> None:
        batch, self._batch = self._batch, bytearray()
        self._hash.update(batch)  # releases the GIL: the writer thread writes meanwhile
        if self._queue is None:
            self._queue = queue.Queue(self.DEPTH)
            self._writer = threading.Thread(
                target=self._write_loop, args=(self._queue,), name="vault-incoming", daemon=True
            )
            self._writer.start()
        self._queue.put(batch)

    def _write_loop(self, q: queue.Queue[bytearray | None]) -> None:
        fd = self._fd
        offset = 0
        while True:
            batch = q.get()
            if batch is None:
                return
            if self._error is not None:
                continue  # keep draining so that `write` never blocks on a dead writer
            try:
                _write_all(fd, batch)
                _start_writeback(fd, offset, len(batch))
                offset += len(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                self._error = exc

    def _finish_writer(self) -> None:
        """Stop the writer thread after it wrote everything queued."""
        if self._writer is not None and self._queue is not None:
            self._queue.put(None)
            self._writer.join()
            self._writer = self._queue = None

    def _seal(self) -> None:
        """Write what is left, make read-only and fsync; no more writes after this."""
        if self._consumed:
            raise VaultError("segment already committed or quarantined")
        if not self._sealed:
            if self._batch:
                self._hash.update(self._batch)
            self._finish_writer()
            if self._error is not None:
                raise self._error
            if self._batch:
                _write_all(self._fd, self._batch)
                self._batch = bytearray()
            os.fchmod(self._fd, READ_ONLY)
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._sealed = True

    def discard(self) -> None:
        """Abandon the transfer: close and remove the temp file (no-op after a commit)."""
        if self._batch and not self._sealed:
            self._hash.update(self._batch)  # keep `sha256` what it was
        self._batch = bytearray()
        self._finish_writer()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._sealed = True
        if not self._consumed:
            self.path.unlink(missing_ok=True)
            self._consumed = True

    def __enter__(self) -> Incoming:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_SYNC_FILE_RANGE = _load_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing [offset, offset+length) of `fd` to disk now, without waiting for it.

    Linux's sync_file_range(SYNC_FILE_RANGE_WRITE): the kernel begins writeback of those
    dirty pages, so the fsync in `Incoming._seal` finds most of the segment on disk already.
    It promises nothing about durability (no metadata, no disk cache flush) and replaces no
    fsync: a hint for speed only, skipped where it does not exist or fails.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


class Vault:
    """An evidence vault rooted at a directory. Use `Vault.open`."""

    def __init__(self, root: Path, db: sqlite3.Connection) -> None:
        self.root = root
        self._db: sqlite3.Connection | None = db
        self._tmp = root / "tmp"

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path, create: bool = True) -> Vault:
        """Open the vault at `root`; create it there if `create` and the directory is empty."""
        root = Path(root).absolute()
        db_path = root / DB_NAME
        new = not db_path.exists()
        if new:
            if not create:
                raise VaultError(f"{root} is not a vault (no {DB_NAME})")
            if root.exists() and (not root.is_dir() or any(root.iterdir())):
                raise VaultError(f"{root} is not empty and not a vault; refusing to create one")
            _mkdir_durable(root)
        try:
            db = sqlite3.connect(db_path, isolation_level=None)
        except sqlite3.Error as exc:
            raise VaultError(f"cannot open {db_path}: {exc}") from exc
        try:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA recursive_triggers = ON")
            db.execute("PRAGMA busy_timeout = 10000")
            if new:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = FULL")
                # executescript commits first, so the transaction opens inside the script
                db.executescript("BEGIN IMMEDIATE;" + _SCHEMA)
                db.execute("INSERT INTO meta(key, value) VALUES ('layout', ?)", (LAYOUT,))
                db.execute("INSERT INTO meta(key, value) VALUES ('created_at', ?)", (_now(),))
                db.execute("COMMIT")
                for sub in ("objects", "manifests", "quarantine", "tmp"):
                    _mkdir_durable(root / sub)
            else:
                db.execute("PRAGMA synchronous = FULL")
                row = db.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
                if row is None or row[0] != LAYOUT:
                    raise VaultError(f"{root}: unsupported vault layout {row and row[0]!r}")
        except sqlite3.Error as exc:
            db.close()
            raise VaultError(f"{db_path} is not a usable vault database: {exc}") from exc
        except BaseException:
            db.close()
            raise
        vault = cls(root, db)
        vault._remove_stale_tmp()
        return vault

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Vault:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise VaultError("vault is closed")
        return self._db

    def _remove_stale_tmp(self) -> None:
        cutoff = time.time() - STALE_TMP_S
        with contextlib.suppress(FileNotFoundError):
            for entry in self._tmp.iterdir():
                with contextlib.suppress(OSError):
                    if entry.is_file() and entry.stat().st_mtime < cutoff:
                        entry.unlink()

    # -- devices -------------------------------------------------------------------------------

    def enroll(self, device_id: str, public_key: bytes, *, by: str, note: str = "") -> bool:
        """Enroll a device's Ed25519 public key. True if new, False if already enrolled with it.

        A different key for an enrolled device is refused: keys are never replaced silently.
        """
        if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
            raise VaultError(f"device id {device_id!r} is not 1-64 of [A-Za-z0-9._-]")
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise VaultError("an Ed25519 public key is 32 bytes")
        if not by:
            raise VaultError("enrollment must name who enrolled the device")
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT public_key FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
            if row is not None:
                if bytes(row[0]) == public_key:
                    db.execute("COMMIT")
                    return False
                raise VaultError(
                    f"{device_id} is enrolled with key id {evidence.key_id(bytes(row[0])).hex()};"
                    f" refusing key id {evidence.key_id(public_key).hex()}"
                )
            db.execute(
                "INSERT INTO devices(device_id, public_key, key_id, enrolled_at, enrolled_by,"
                " note) VALUES (?, ?, ?, ?, ?, ?)",
                (device_id, public_key, evidence.key_id(public_key), _now(), by, note),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        _mkdir_durable(self.root / "manifests" / device_id)
        return True

    def public_key(self, device_id: str) -> bytes | None:
        row = self.db.execute(
            "SELECT public_key FROM devices WHERE device_id = ?", (device_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def devices(self) -> list[dict[str, object]]:
        cur = self.db.execute(
            "SELECT device_id, public_key, key_id, enrolled_at, enrolled_by, note"
            " FROM devices ORDER BY device_id"
        )
        return [_row_dict(cur, row) for row in cur.fetchall()]

    # -- records -------------------------------------------------------------------------------

    def head(self, device_id: str) -> tuple[int, bytes]:
        """(last stored seq, its record hash); (0, GENESIS) if nothing is stored."""
        row = self.db.execute(
            "SELECT seq, record_sha256 FROM records WHERE device_id = ? ORDER BY seq DESC LIMIT 1",
            (device_id,),
        ).fetchone()
        return (0, manifest.GENESIS) if row is None else (int(row[0]), bytes(row[1]))

    def stored_record_hash(self, device_id: str, seq: int) -> bytes | None:
        row = self.db.execute(
            "SELECT record_sha256 FROM records WHERE device_id = ? AND seq = ?",
            (device_id, seq),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def records(self, device_id: str) -> list[dict[str, object]]:
        """Index rows of a device in seq order (tracks decoded, truncated as bool)."""
        cur = self.db.execute(
            "SELECT * FROM records WHERE device_id = ? ORDER BY seq", (device_id,)
        )
        rows = []
        for row in cur.fetchall():
            d = _row_dict(cur, row)
            if isinstance(d["tracks"], str):
                d["tracks"] = json.loads(d["tracks"])
            if d["truncated"] is not None:
                d["truncated"] = bool(d["truncated"])
            rows.append(d)
        return rows

    def incoming(self) -> Incoming:
        """Start receiving a segment into tmp/."""
        if self._db is None:
            raise VaultError("vault is closed")
        return Incoming(self._tmp / (uuid.uuid4().hex + ".part"))

    def object_path(self, sha256: bytes) -> Path:
        return _object_path(self.root, sha256)

    def events(
        self, *, device_id: str | None = None, case_no: str | None = None
    ) -> list[dict[str, object]]:
        """Indexed events and gaps, by device and/or case number, in time order."""
        query = "SELECT * FROM events WHERE 1 = 1"
        params: list[str] = []
        if device_id is not None:
            query += " AND device_id = ?"
            params.append(device_id)
        if case_no is not None:
            query += " AND case_no = ?"
            params.append(case_no)
        return _rows_with_json(self.db.execute(query + " ORDER BY t, seq", params), "detail")

    def manifest_path(self, device_id: str, seq: int) -> Path:
        return self.root / "manifests" / device_id / f"{seq:08d}.cose"

    def commit(
        self, record: bytes, fields: dict[str, object], incoming: Incoming | None
    ) -> bytes:
        """Store a verified record (and a segment's data) durably; return the record hash.

        Segments come with `incoming`; events and gaps carry no data and come without. The
        record is re-verified against the enrolled key and the stored chain head, and must
        decode to exactly `fields`. Raises VaultError (storing nothing) otherwise.
        """
        db = self.db
        device_id = fields.get("device_id")
        seq = fields.get("seq")
        if not isinstance(device_id, str) or not isinstance(seq, int):
            raise VaultError("fields lack device_id/seq")
        is_segment = fields.get("kind") == manifest.KIND_SEGMENT
        if is_segment != (incoming is not None):
            need = "needs" if is_segment else "takes no"
            raise VaultError(f"a {fields.get('kind')} record {need} segment data")
        key = self.public_key(device_id)
        if key is None:
            raise VaultError(f"{device_id!r} is not enrolled")
        if incoming is not None:
            if incoming.path.parent != self._tmp:
                raise VaultError("segment was not received into this vault")
            try:
                evidence.verify_data(fields, incoming.sha256, incoming.size)
            except evidence.EvidenceError as exc:
                raise VaultError(f"segment data refused: {exc}") from exc
            incoming._seal()  # data durable before it gets a name
        record = bytes(record)
        receipt = manifest.record_hash(record)

        db.execute("BEGIN IMMEDIATE")  # the head cannot move under us
        try:
            last, last_hash = self.head(device_id)
            if seq != last + 1:
                raise VaultError(f"{device_id}: record {seq} refused, the vault holds 1..{last}")
            try:
                signed = evidence.verify_record(record, key, device_id, seq, last_hash)
            except evidence.EvidenceError as exc:
                raise VaultError(f"record refused: {exc}") from exc
            if signed != fields:
                raise VaultError("fields differ from what the record's signature covers")
            man_path = self.manifest_path(device_id, seq)
            man_exists = man_path.exists()
            if man_exists and man_path.read_bytes() != record:
                raise VaultError(
                    f"{man_path.relative_to(self.root)} exists unindexed with other bytes;"
                    " run verify"
                )
            if incoming is not None:
                segment_sha = fields["sha256"]
                assert isinstance(segment_sha, bytes)
                self._place_object(incoming, segment_sha)
            if not man_exists:  # else: left by an interrupted commit of this same record
                _mkdir_durable(man_path.parent)
                _write_durable(self._tmp, man_path, record)
                _fsync_dir(man_path.parent)
            self._insert_record(signed, receipt)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return receipt

    def _place_object(self, incoming: Incoming, sha256: bytes) -> None:
        dest = self.object_path(sha256)
        if dest.exists():
            if _hash_file(dest) != (sha256, incoming.size):
                raise VaultError(
                    f"{dest.relative_to(self.root)} does not hash to its name; run verify"
                )
            incoming.path.unlink()
        else:
            _mkdir_durable(dest.parent)
            os.replace(incoming.path, dest)
        incoming._consumed = True
        _fsync_dir(dest.parent)

    def _insert_record(self, f: dict[str, Any], receipt: bytes) -> None:
        clock = f.get("clock")
        kind = f["kind"]
        # Events happen at an instant; a gap spans from the last sign of life to the reboot.
        t_start = f.get("t_start", f.get("t", f.get("t_last")))
        t_end = f.get("t_end", f.get("t", f.get("t_boot")))
        self.db.execute(
            "INSERT INTO records(device_id, seq, kind, record_sha256, prev, segment_sha256,"
            " size, t_start, t_end, clock_state, tracks, policy, truncated, stored_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                f["device_id"],
                f["seq"],
                f["kind"],
                receipt,
                f["prev"],
                f.get("sha256"),
                f.get("size"),
                t_start,
                t_end,
                clock.get("state") if isinstance(clock, dict) else None,
                json.dumps(f["tracks"]) if "tracks" in f else None,
                f["policy"],
                int(f["truncated"]) if "truncated" in f else None,
                _now(),
            ),
        )
        if kind != manifest.KIND_SEGMENT:
            phase = f.get("phase") or {}
            if kind == manifest.KIND_GAP:
                name = f["cause"]
                detail = {k: f[k] for k in ("last_seq", "t_last", "t_boot", "battery_main",
                                            "battery_backup")}
            else:
                name, detail = f["event"], f["detail"]
            self.db.execute(
                "INSERT INTO events(device_id, seq, kind, name, t, phase_row, case_no, officer,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (f["device_id"], f["seq"], kind, name, t_start, phase.get("row"),
                 phase.get("case"), phase.get("officer"), json.dumps(detail, default=_hex)),
            )

    # -- quarantine and dockings ---------------------------------------------------------------

    def quarantine(
        self,
        *,
        device_id: str,
        seq: int | None,
        record: bytes | None,
        incoming: Incoming | None,
        code: str,
        detail: str,
    ) -> Path:
        """Keep what arrived but is not good evidence, with the reason; return its directory."""
        db = self.db
        at = _now()
        stamp = at.replace("-", "").replace(":", "").replace(".", "")
        base = f"{stamp}-{_safe_name(str(device_id))}-{'x' if seq is None else seq}"
        qroot = self.root / "quarantine"
        _mkdir_durable(qroot)
        qdir = qroot / base
        n = 0
        while True:
            try:
                qdir.mkdir()
                break
            except FileExistsError:
                n += 1
                qdir = qroot / f"{base}-{n}"
        reason: dict[str, object] = {
            "code": code,
            "detail": detail,
            "device_id": device_id,
            "seq": seq,
            "at": at,
        }
        if record is not None:
            record = bytes(record)
            reason["record_sha256"] = manifest.record_hash(record).hex()
            _write_durable(self._tmp, qdir / "record.cose", record)
        if incoming is not None:
            reason["segment_sha256"] = incoming.sha256.hex()
            reason["segment_size"] = incoming.size
            incoming._seal()
            os.replace(incoming.path, qdir / "segment.bin")
            incoming._consumed = True
        text = json.dumps(reason, indent=2, sort_keys=True) + "\n"
        _write_durable(self._tmp, qdir / "reason.json", text.encode())
        _fsync_dir(qdir)
        _fsync_dir(qroot)
        rel = qdir.relative_to(self.root).as_posix()
        db.execute(
            "INSERT INTO quarantine(device_id, seq, code, detail, path, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (device_id, seq, code, detail, rel, at),
        )
        return qdir

    def quarantined(self, device_id: str | None = None) -> list[dict[str, object]]:
        sql = "SELECT * FROM quarantine"
        args: tuple[object, ...] = ()
        if device_id is not None:
            sql += " WHERE device_id = ?"
            args = (device_id,)
        cur = self.db.execute(sql + " ORDER BY id", args)
        return [_row_dict(cur, row) for row in cur.fetchall()]

    def log_docking(self, session: dict[str, object]) -> int:
        """Append a docking session report; return its row id."""
        device_id = session.get("device_id")
        report = json.dumps(session, sort_keys=True, default=_json_default)
        cur = self.db.execute(
            "INSERT INTO dockings(device_id, at, report) VALUES (?, ?, ?)",
            (device_id if isinstance(device_id, str) else None, _now(), report),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def dockings(self, device_id: str | None = None) -> list[dict[str, object]]:
        sql = "SELECT id, device_id, at, report FROM dockings"
        args: tuple[object, ...] = ()
        if device_id is not None:
            sql += " WHERE device_id = ?"
            args = (device_id,)
        return _rows_with_json(self.db.execute(sql + " ORDER BY id", args), "report")

    # -- verification --------------------------------------------------------------------------

    def verify(self, progress: Callable[[int, int], None] | None = None) -> list[Problem]:
        """Re-verify the whole vault from its files. An empty list means the vault is good.

        `progress(done, total)` is called after each record.
        """
        return _Verifier(self.root, self.db).run(progress)


class _Verifier:
    """One pass of `Vault.verify`: collects Problems, remembers which files the index names."""

    def __init__(self, root: Path, db: sqlite3.Connection) -> None:
        self.root = root
        self.db = db
        self.problems: list[Problem] = []
        self.indexed: set[str] = set()  # manifest and object paths the index accounts for
        self.hashed: dict[str, tuple[bytes, int] | None] = {}  # object path -> (sha256, size)

    def add(self, code: str, path: Path | str, detail: str) -> None:
        rel = path.relative_to(self.root).as_posix() if isinstance(path, Path) else path
        self.problems.append(Problem(code, rel, detail))

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def run(self, progress: Callable[[int, int], None] | None) -> list[Problem]:
        self.check_database()
        total = int(self.db.execute("SELECT count(*) FROM records").fetchone()[0])
        done = 0
        devices = self.db.execute(
            "SELECT device_id, public_key, key_id FROM devices ORDER BY device_id"
        ).fetchall()
        for device_id, public_key, kid in devices:
            public_key = bytes(public_key)
            if bytes(kid) != evidence.key_id(public_key):
                self.add("index_mismatch", DB_NAME, f"{device_id}: key id does not match its key")
            expect_seq, prev = 1, manifest.GENESIS
            rows = self.db.execute(
                "SELECT seq, record_sha256, segment_sha256, size, prev FROM records"
                " WHERE device_id = ? ORDER BY seq",
                (device_id,),
            ).fetchall()
            for seq, rec_sha, seg_sha, size, idx_prev in rows:
                if seq != expect_seq:
                    self.add(
                        "chain_gap",
                        DB_NAME,
                        f"{device_id}: records {expect_seq}..{seq - 1} missing",
                    )
                index_row = (
                    bytes(rec_sha),
                    None if seg_sha is None else bytes(seg_sha),
                    size,
                    bytes(idx_prev),
                )
                self.check_record(public_key, device_id, seq, prev, index_row)
                expect_seq, prev = seq + 1, bytes(rec_sha)
                done += 1
                if progress is not None:
                    progress(done, total)
        self.check_unindexed()
        self.check_quarantine()
        return self.problems

    def check_database(self) -> None:
        rows = self.db.execute("PRAGMA integrity_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            self.add("db_corrupt", DB_NAME, "; ".join(str(r[0]) for r in rows[:5]))
        if self.db.execute("PRAGMA foreign_key_check").fetchone() is not None:
            self.add("db_corrupt", DB_NAME, "records refer to devices that are not enrolled")
        triggers = {
            r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        }
        for table in _APPEND_ONLY:
            for op in ("update", "delete"):
                if f"{table}_no_{op}" not in triggers:
                    self.add(
                        "schema_altered", DB_NAME, f"append-only trigger {table}_no_{op} is missing"
                    )

    def check_record(
        self,
        public_key: bytes,
        device_id: str,
        seq: int,
        prev: bytes,
        index_row: tuple[bytes, bytes | None, int | None, bytes],
    ) -> None:
        rec_sha, seg_sha, size, idx_prev = index_row
        what = f"record {seq} of {device_id}"
        man = self.root / "manifests" / device_id / f"{seq:08d}.cose"
        self.indexed.add(self.rel(man))
        if seg_sha is not None:  # accounted for even if the manifest is gone
            self.indexed.add(self.rel(_object_path(self.root, seg_sha)))
        try:
            data = man.read_bytes()
        except FileNotFoundError:
            self.add("manifest_missing", man, f"{what}: signed record file is missing")
            return
        if manifest.record_hash(data) != rec_sha:
            self.add("record_mismatch", man, f"{what}: bytes differ from the record stored")
        try:
            fields = evidence.verify_record(data, public_key, device_id, seq, prev)
        except evidence.EvidenceError as exc:
            self.add(exc.code, man, f"{what}: {exc.detail}")
            return
        if (fields.get("sha256"), fields.get("size"), fields["prev"]) != (seg_sha, size, idx_prev):
            self.add("index_mismatch", DB_NAME, f"{what}: index row differs from the signed record")
        if fields["kind"] == manifest.KIND_SEGMENT:
            self.check_object(fields, f"segment {seq} of {device_id}")

    def check_object(self, fields: dict[str, Any], segment: str) -> None:
        obj = _object_path(self.root, fields["sha256"])
        key = self.rel(obj)
        self.indexed.add(key)
        if key not in self.hashed:
            try:
                self.hashed[key] = _hash_file(obj)
            except FileNotFoundError:
                self.hashed[key] = None
        got = self.hashed[key]
        if got is None:
            self.add("object_missing", obj, f"{segment}: data file is missing")
        elif got[0] != fields["sha256"]:
            self.add("hash_mismatch", obj, f"{segment}: SHA-256 differs from its signed manifest")
        elif got[1] != fields["size"]:
            self.add(
                "size_mismatch",
                obj,
                f"{segment}: {got[1]} bytes, signed manifest says {fields['size']}",
            )

    def check_unindexed(self) -> None:
        for top, kind in (("manifests", "record"), ("objects", "segment data")):
            base = self.root / top
            if not base.is_dir():
                self.add("layout_missing", top, f"{top}/ directory is missing")
                continue
            for dirpath, _dirs, files in os.walk(base):
                for name in sorted(files):
                    path = Path(dirpath) / name
                    if self.rel(path) not in self.indexed:
                        self.add("unindexed", path, f"{kind} file not in the index")

    def check_quarantine(self) -> None:
        listed = set()
        for (rel,) in self.db.execute("SELECT path FROM quarantine"):
            listed.add(rel)
            if not (self.root / rel / "reason.json").is_file():
                self.add(
                    "quarantine_missing", rel, "quarantined item or its reason.json is missing"
                )
        qroot = self.root / "quarantine"
        if qroot.is_dir():
            for entry in sorted(qroot.iterdir()):
                if self.rel(entry) not in listed:
                    self.add("unindexed", entry, "quarantine entry not in the index")


def _object_path(root: Path, sha256: bytes) -> Path:
    h = sha256.hex()
    return root / "objects" / h[:2] / h


def _rows_with_json(cur: sqlite3.Cursor, column: str) -> list[dict[str, object]]:
    """Rows as dicts, with one JSON text column decoded."""
    rows = []
    for row in cur.fetchall():
        d = _row_dict(cur, row)
        d[column] = json.loads(str(d[column]))
        rows.append(d)
    return rows


def _row_dict(cur: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, object]:
    return {d[0]: row[i] for i, d in enumerate(cur.description)}


__all__ = ["Incoming", "Problem", "Vault", "VaultError"]
