"""The evidence vault: append-only, tamper-evident, byte-exact storage of signed records.

Art. 9 of the regulation: footage is kept whole and nobody may cut or alter the original data.
The vault stores every record exactly as the recorder signed it, and the segment bytes exactly
as received, so anyone holding a device's public key can re-check the whole chain later
(`Vault.verify`, `bodycam vault verify`). What is evidence and what goes to quarantine is
decided in one place, `host_agent/vault/ingest.py`; this module stores what it decided.

On-disk layout::

    <root>/
      vault.sqlite                  index (SQLite, WAL, foreign keys on); -wal/-shm beside it;
                                    tables in host_agent/vault/schema.py
      objects/<h[:2]>/<h>           segment bytes (and hall footage the custody register
                                    accounts for), named by the lowercase hex SHA-256 <h> of
                                    their content; read-only (0444); identical content is
                                    stored once; removed only by the retention job
                                    (host_agent/custody/retention.py), each removal registered
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
      checkpoint                    the latest checkpoint the vault signed (a C2SP signed note,
                                    host_agent/vault/checkpoint.py); read-only (0444)

The log: every row the vault appends (an enrolment, a record, a quarantine entry, a docking
report, a fact the dock hands in, a dock key that signed a checkpoint) appends one entry to an
RFC 6962 Merkle log in the same SQLite transaction (schema.py says what each entry holds;
log.py is the tree math). `checkpoint(signer)` signs the log's size and root; copies of those
notes kept elsewhere (a witness, the central tier, the next docking) let `verify` see a vault
that was cut, rolled back to an older copy, or rewritten, even by someone holding the whole
database: the log never trusts its own database to tell how long it was.

Times are UTC ISO-8601 strings (`2024-05-01T08:30:00.123456Z`); t_start/t_end are the device's
µs clock as signed.

Store order (each step durable before the next): segment data fsynced, renamed into objects/
(0444) or quarantine/; record written to a temp file, fsynced, renamed into manifests/ (0444);
directories fsynced; then the index rows in one SQLite transaction (synchronous=FULL) that
holds SQLite's write lock from before the files are placed, so two processes cannot interleave.
A crash before the index row leaves at most an unindexed object or manifest that `verify`
reports and that a retry of the same record reuses.

The database is an index, not the proof: the proof is the signed chain in manifests/ plus the
objects they name. `verify` re-checks all of it from the files.

Thread-safety: a Vault holds one sqlite3 connection and must be used from the thread that
opened it; open one Vault per thread (or process) on the same root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from host_agent.vault import checkpoint as notes
from host_agent.vault import evidence, schema
from host_agent.vault.errors import VaultError
from host_agent.vault.files import (
    Incoming,
    fsync_dir,
    hash_file,
    mkdir_durable,
    write_durable,
)
from host_agent.vault.ledger import Ledger, append_log, meta_row
from host_agent.vault.schema import (
    event_columns,
    json_default,
    manifest_path,
    now,
    object_path,
    row_dict,
    signed_columns,
)
from protocol import manifest

if TYPE_CHECKING:
    from host_agent.vault.ingest import Intake
    from host_agent.vault.verify import Problem, Report

STALE_TMP_S = 24 * 3600
DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SUBDIRS = ("objects", "manifests", "quarantine", "tmp")


def _add_custody_table(db: sqlite3.Connection) -> None:
    """Give a vault made before the custody register its table (nothing else changes)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'custody'"
                  ).fetchone() is None:
        db.executescript("BEGIN IMMEDIATE;" + schema.CUSTODY_SCHEMA + "COMMIT;")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:64] or "_"


class Vault(Ledger):
    """An evidence vault rooted at a directory. Use `Vault.open`."""

    def __init__(self, root: Path, db: sqlite3.Connection, vault_id: str) -> None:
        self.root = root
        self._db: sqlite3.Connection | None = db
        self._tmp = root / "tmp"
        self.vault_id = vault_id

    @property
    def origin(self) -> str:
        """The origin line of this vault's checkpoints: `bodycam.vault/<vault id>`."""
        return notes.origin_of(self.vault_id)

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path, create: bool = True) -> Vault:
        """Open the vault at `root`; create it there if `create` and the directory is empty or
        missing. Raises VaultError saying why when `root` is not a usable vault."""
        root = Path(root).absolute()
        db_path = root / schema.DB_NAME
        if root.exists() and not root.is_dir():
            raise VaultError(f"{root} is a file, not a vault directory")
        new = not db_path.exists()
        if new:
            if not create:
                raise VaultError(f"{root} is not a vault (no {schema.DB_NAME})")
            if root.exists() and any(root.iterdir()):
                raise VaultError(f"{root} is not empty and not a vault; refusing to create one")
            try:
                mkdir_durable(root)
            except OSError as exc:
                raise VaultError(f"cannot create a vault at {root}: {exc.strerror}") from exc
        elif not os.access(root, os.W_OK) or not os.access(db_path, os.W_OK):
            raise VaultError(f"{root}: the vault is read-only here (no write permission)")
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
                db.executescript("BEGIN IMMEDIATE;" + schema.SCHEMA)
                vault_id = uuid.uuid4().hex
                for key, value in (("layout", schema.LAYOUT), ("created_at", now()),
                                   ("vault_id", vault_id)):
                    db.execute("INSERT INTO meta(key, value) VALUES (?, ?)", (key, value))
                append_log(db, "meta", meta_row(db))  # entry 0: which vault this log is
                db.execute("COMMIT")
                for sub in _SUBDIRS:
                    mkdir_durable(root / sub)
            else:
                db.execute("PRAGMA synchronous = FULL")
                meta = meta_row(db)
                if meta.get("layout") != schema.LAYOUT:
                    raise VaultError(f"{root}: unsupported vault layout {meta.get('layout')!r}"
                                     f" (this version reads {schema.LAYOUT})")
                vault_id = str(meta.get("vault_id") or "")
                if not vault_id:
                    raise VaultError(f"{root}: the vault has no id in its meta table (made by"
                                     " an older version, or altered)")
                _add_custody_table(db)
        except sqlite3.Error as exc:
            db.close()
            raise VaultError(f"{db_path} is not a usable vault database: {exc}") from exc
        except BaseException:
            db.close()
            raise
        vault = cls(root, db, vault_id)
        vault._remove_stale_tmp()
        return vault

    @staticmethod
    def remove_empty(root: Path) -> None:
        """Remove a vault that was just created and holds nothing (no device, no record): the
        database and the empty directories `open` made, and `root` if that leaves it empty.
        Anything else found there is left alone."""
        with Vault.open(root, create=False) as vault:
            if vault.devices() or vault.record_count() or vault.quarantined():
                return
        for name in (schema.DB_NAME, schema.DB_NAME + "-wal", schema.DB_NAME + "-shm"):
            (root / name).unlink(missing_ok=True)
        for sub in _SUBDIRS:
            with contextlib.suppress(OSError):
                (root / sub).rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()

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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock (BEGIN IMMEDIATE) throughout."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # -- devices -------------------------------------------------------------------------------

    def enroll(self, device_id: str, public_key: bytes, *, by: str, note: str = "") -> bool:
        """Enroll a device's Ed25519 public key. True if new, False if already enrolled with it.

        A different key for an enrolled device is refused (keys are never replaced), and so is
        a key already enrolled under another device id (one key, one recorder).
        """
        if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id):
            raise VaultError(f"device id {device_id!r} is not 1-64 of [A-Za-z0-9._-]")
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise VaultError("an Ed25519 public key is 32 bytes")
        if not by:
            raise VaultError("enrollment must name who enrolled the device")
        kid = evidence.key_id(public_key)
        with self.transaction() as db:
            row = db.execute(
                "SELECT public_key FROM devices WHERE device_id = ?", (device_id,)
            ).fetchone()
            if row is not None:
                if bytes(row[0]) == public_key:
                    return False
                raise VaultError(
                    f"{device_id} is enrolled with key id {evidence.key_id(bytes(row[0])).hex()};"
                    f" refusing key id {kid.hex()}"
                )
            other = db.execute(
                "SELECT device_id FROM devices WHERE public_key = ? OR key_id = ?",
                (public_key, kid),
            ).fetchone()
            if other is not None:
                raise VaultError(f"key id {kid.hex()} is already enrolled as {other[0]};"
                                 f" refusing it for {device_id}")
            db.execute(
                "INSERT INTO devices(device_id, public_key, key_id, enrolled_at, enrolled_by,"
                " note) VALUES (?, ?, ?, ?, ?, ?)",
                (device_id, public_key, kid, now(), by, note),
            )
            self._log_row("devices", "device_id = ?", (device_id,))
        mkdir_durable(self.root / "manifests" / device_id)
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
        return [row_dict(cur, row) for row in cur.fetchall()]

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
            d = row_dict(cur, row)
            if isinstance(d["tracks"], str):
                d["tracks"] = json.loads(d["tracks"])
            if d["truncated"] is not None:
                d["truncated"] = bool(d["truncated"])
            rows.append(d)
        return rows

    def record_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM records").fetchone()[0])

    def incoming(self) -> Incoming:
        """Start receiving a segment into tmp/."""
        if self._db is None:
            raise VaultError("vault is closed")
        return Incoming(self._tmp / (uuid.uuid4().hex + ".part"))

    def object_path(self, sha256: bytes) -> Path:
        return object_path(self.root, sha256)

    def manifest_path(self, device_id: str, seq: int) -> Path:
        return manifest_path(self.root, device_id, seq)

    # -- what the records office reads (host_agent/custody/archive.py) ---------------------------

    def record_bytes(self, device_id: str, seq: int) -> bytes:
        """A stored record, byte-exact as signed."""
        try:
            return self.manifest_path(device_id, seq).read_bytes()
        except OSError as exc:
            raise VaultError(f"cannot read record {device_id}/{seq}: {exc.strerror};"
                             " run bodycam vault verify") from exc

    def has_object(self, sha256: bytes) -> bool:
        return self.object_path(sha256).is_file()

    def copy_object(self, sha256: bytes, dest: Path) -> None:
        """The object's bytes into `dest` (a new file), flushed to disk."""
        shutil.copyfile(self.object_path(sha256), dest)
        with dest.open("rb+") as f:
            os.fsync(f.fileno())

    def records_between(self, device_id: str, from_us: int, to_us: int) -> list[int]:
        """The seqs of a device's records overlapping [from_us, to_us)."""
        return [int(seq) for (seq,) in self.db.execute(
            "SELECT seq FROM records WHERE device_id = ? AND t_end > ? AND t_start < ?"
            " ORDER BY seq", (device_id, from_us, to_us))]

    def case_devices(self, case: str) -> list[str]:
        """The devices with an event or gap record naming the case."""
        return [str(d) for (d,) in self.db.execute(
            "SELECT DISTINCT device_id FROM events WHERE case_no = ? ORDER BY device_id",
            (case,))]

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

    def intake(self, device_id: str) -> Intake:
        """The ingest step for one enrolled recorder (host_agent/vault/ingest.py)."""
        from host_agent.vault.ingest import Intake

        key = self.public_key(device_id)
        if key is None:
            raise VaultError(f"{device_id!r} is not enrolled")
        return Intake(self, device_id, key)

    # -- storing (called by the ingest step only, inside its transaction) ----------------------

    def _store_record(self, record: bytes, fields: dict[str, Any], incoming: Incoming | None,
                      *, data_state: str | None, chain_break: str | None) -> tuple[bytes, int]:
        """Place a record (and a segment's data, if `incoming`) and index it; return its hash
        and the index of its log entry.

        The caller holds the write transaction and has decided that this is evidence."""
        device_id, seq = fields["device_id"], fields["seq"]
        receipt = manifest.record_hash(record)
        man_path = self.manifest_path(device_id, seq)
        man_exists = man_path.exists()
        if man_exists and man_path.read_bytes() != record:
            raise VaultError(
                f"{man_path.relative_to(self.root)} exists unindexed with other bytes; run verify"
            )
        if incoming is not None:
            self._place_object(incoming, fields["sha256"])
        if not man_exists:  # else: left by an interrupted store of this same record
            mkdir_durable(man_path.parent)
            write_durable(self._tmp, man_path, record)
            fsync_dir(man_path.parent)
        index = self._insert_record(fields, receipt, data_state, chain_break)
        return receipt, index

    def store_object(self, source: Path) -> tuple[bytes, int]:
        """Copy a file's bytes into objects/ (content-addressed, durable, read-only): footage
        that no recorder signed, which the custody register accounts for (hall cameras).
        Returns (SHA-256, size)."""
        incoming = self.incoming()
        try:
            with source.open("rb") as f:
                while chunk := f.read(1 << 20):
                    incoming.write(chunk)
            sha = incoming.sha256
            self._place_object(incoming, sha)
        except BaseException:
            incoming.discard()
            raise
        return sha, incoming.size

    def _place_object(self, incoming: Incoming, sha256: bytes) -> None:
        dest = self.object_path(sha256)
        if dest.exists():
            if hash_file(dest) != (sha256, incoming.size):
                raise VaultError(
                    f"{dest.relative_to(self.root)} does not hash to its name; run verify"
                )
            incoming.discard()
        else:
            mkdir_durable(dest.parent)
            incoming.move_to(dest)
        fsync_dir(dest.parent)

    def _insert_record(self, f: dict[str, Any], receipt: bytes, data_state: str | None,
                       chain_break: str | None) -> int:
        kind = f["kind"]
        cols = signed_columns(f, receipt)
        t_start = cols["t_start"]
        self.db.execute(
            "INSERT INTO records(device_id, seq, kind, record_sha256, prev, segment_sha256,"
            " size, t_start, t_end, clock_state, tracks, policy, truncated, data_state,"
            " chain_break, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (f["device_id"], *cols.values(), data_state, chain_break, now()),
        )
        if kind != manifest.KIND_SEGMENT:
            name, detail, phase = event_columns(f)
            self.db.execute(
                "INSERT INTO events(device_id, seq, kind, name, t, phase_row, case_no, officer,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (f["device_id"], f["seq"], kind, name, t_start, phase.get("row"),
                 phase.get("case"), phase.get("officer"), detail),
            )
        return self._log_row("records", "device_id = ? AND seq = ?", (f["device_id"], f["seq"]))

    def _quarantine(self, *, device_id: str, seq: int | None, record: bytes | None,
                    incoming: Incoming | None, code: str, detail: str,
                    complete: bool) -> tuple[Path, int]:
        """Keep what arrived but is not good evidence, with the reason; return its directory
        and the index of its log entry.

        The caller holds the write transaction."""
        at = now()
        stamp = at.replace("-", "").replace(":", "").replace(".", "")
        base = f"{stamp}-{_safe_name(str(device_id))}-{'x' if seq is None else seq}"
        qroot = self.root / "quarantine"
        mkdir_durable(qroot)
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
            "code": code, "detail": detail, "device_id": device_id, "seq": seq, "at": at,
        }
        record_sha = seg_sha = seg_size = None
        if record is not None:
            record = bytes(record)
            record_sha = manifest.record_hash(record)
            reason["record_sha256"] = record_sha.hex()
            write_durable(self._tmp, qdir / "record.cose", record)
        if incoming is not None:
            seg_sha, seg_size = incoming.sha256, incoming.size
            reason["segment_sha256"] = seg_sha.hex()
            reason["segment_size"] = seg_size
            incoming.move_to(qdir / "segment.bin")
        text = json.dumps(reason, indent=2, sort_keys=True) + "\n"
        write_durable(self._tmp, qdir / "reason.json", text.encode())
        fsync_dir(qdir)
        fsync_dir(qroot)
        rel = qdir.relative_to(self.root).as_posix()
        cur = self.db.execute(
            "INSERT INTO quarantine(device_id, seq, record_sha256, segment_sha256, segment_size,"
            " complete, code, detail, path, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (device_id, seq, record_sha, seg_sha, seg_size, int(complete), code, detail, rel, at),
        )
        return qdir, self._log_row("quarantine", "id = ?", (cur.lastrowid,))

    def quarantined(self, device_id: str | None = None) -> list[dict[str, object]]:
        sql = "SELECT * FROM quarantine"
        args: tuple[object, ...] = ()
        if device_id is not None:
            sql += " WHERE device_id = ?"
            args = (device_id,)
        cur = self.db.execute(sql + " ORDER BY id", args)
        return [row_dict(cur, row) for row in cur.fetchall()]

    def quarantine_of(self, device_id: str, record_sha256: bytes) -> dict[str, object] | None:
        """The quarantine entry already holding this exact record of this device, if any."""
        cur = self.db.execute(
            "SELECT * FROM quarantine WHERE device_id = ? AND record_sha256 = ?"
            " ORDER BY complete DESC, id LIMIT 1", (device_id, record_sha256))
        row = cur.fetchone()
        return None if row is None else row_dict(cur, row)

    # -- dockings ------------------------------------------------------------------------------

    def log_docking(self, session: dict[str, object]) -> int:
        """Append a docking session report (and its log entry); return its row id."""
        device_id = session.get("device_id")
        try:
            report = json.dumps(session, sort_keys=True, default=json_default)
        except (TypeError, ValueError) as exc:
            raise VaultError(f"a docking report must be JSON: {exc}") from exc
        with self._writing() as db:
            cur = db.execute(
                "INSERT INTO dockings(device_id, at, report) VALUES (?, ?, ?)",
                (device_id if isinstance(device_id, str) else None, now(), report),
            )
            assert cur.lastrowid is not None
            self._log_row("dockings", "id = ?", (cur.lastrowid,))
        return cur.lastrowid

    def dockings(self, device_id: str | None = None) -> list[dict[str, object]]:
        sql = "SELECT id, device_id, at, report FROM dockings"
        args: tuple[object, ...] = ()
        if device_id is not None:
            sql += " WHERE device_id = ?"
            args = (device_id,)
        return _rows_with_json(self.db.execute(sql + " ORDER BY id", args), "report")

    # -- facts the dock hands in --------------------------------------------------------------

    # -- verification --------------------------------------------------------------------------

    def verify(self, progress: Callable[[int, int], None] | None = None, *,
               checkpoints: Iterable[str | Path] = (), witness: Iterable[str | Path] = (),
               unit_key: bytes | None = None, dock_certs: Iterable[bytes] = ()) -> list[Problem]:
        """Re-verify the whole vault from its files and its log. An empty list means the vault
        is good. `progress(done, total)` is called after each record.

        `checkpoints` are checkpoint note files, `witness` directories of them (copies kept
        elsewhere): the log must extend each one. With `unit_key` (the unit's Ed25519 public
        key) a checkpoint counts only if signed by a dock key the unit certified (certificates
        from the docks table or `dock_certs`); without it, by a dock key the vault recorded.
        See `verify_report` for what was checked against what.
        """
        return self.verify_report(progress, checkpoints=checkpoints, witness=witness,
                                  unit_key=unit_key, dock_certs=dock_certs).problems

    def verify_report(self, progress: Callable[[int, int], None] | None = None, *,
                      checkpoints: Iterable[str | Path] = (), witness: Iterable[str | Path] = (),
                      unit_key: bytes | None = None,
                      dock_certs: Iterable[bytes] = ()) -> Report:
        """`verify`, with the log's size and root and each checkpoint's result."""
        from host_agent.vault.verify import Anchors, Verifier

        anchors = Anchors.load(checkpoints, witness, unit_key, dock_certs)
        return Verifier(self.root, self.db, anchors).report(progress)





def _rows_with_json(cur: sqlite3.Cursor, column: str) -> list[dict[str, object]]:
    """Rows as dicts, with one JSON text column decoded."""
    rows = []
    for row in cur.fetchall():
        d = row_dict(cur, row)
        d[column] = json.loads(str(d[column]))
        rows.append(d)
    return rows
