"""`Vault.verify`: re-check the whole vault from its files and its log, trusting the index for
nothing.

For each enrolled device, every record file in chain order: its bytes hash to the index row,
its signature verifies with the enrolled key, it continues the chain (or the index says where
and why it does not, `chain_break`), and every index column that comes from the signed record
(records and events alike) equals what the record says. Each segment's object hashes to its
signed SHA-256 and size; a segment whose data arrived wrong is in quarantine with those bytes.
Files nobody indexed, quarantine entries that are gone or altered, and a database schema other
than the vault's own (a dropped or rewritten append-only trigger, an extra trigger) are
reported too.

The log (host_agent/vault/log.py) is recomputed from its entries: every row of devices,
records, quarantine, dockings, facts and docks (and the vault's identity in meta) must have
exactly one entry equal to it byte for byte, and every entry its row, so a row added, removed
or edited outside the vault is named even when its table's triggers were dropped and put back.
Facts must still fit what they state (check_fact). Then each checkpoint, the vault's own and
those kept elsewhere (`Anchors`: files, witness directories), must carry a signature by a
trusted dock key (certified by the unit's key when one is given, else one the vault recorded)
and be a prefix of today's log: same root over its first `size` entries. A vault cut at the
end, rolled back to an older copy, or rewritten and re-hashed shows up against any checkpoint
signed before: that is what makes it tamper-evident against someone holding the whole disk.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from host_agent.vault import checkpoint as notes
from host_agent.vault import evidence, log, schema
from host_agent.vault.errors import VaultError
from host_agent.vault.files import hash_file
from host_agent.vault.ledger import CHECKPOINT_FILE, cert_key, check_fact, meta_row
from host_agent.vault.schema import event_columns, manifest_path, object_path, signed_columns
from protocol import authority, cbor, manifest

_T = TypeVar("_T")


@dataclass(frozen=True)
class Problem:
    """One thing `Vault.verify` found wrong; `path` is relative to the vault root."""

    code: str
    path: str
    detail: str


# Problem codes of the log and checkpoints (the others are evidence.REASONS and the checks'
# own: index_mismatch, manifest_missing, object_missing, schema_altered, …).
LOG_MISMATCH = "log_mismatch"  # a row differs from its log entry, or an entry from its leaf
LOG_MISSING = "log_missing"  # a row without a log entry: added outside the vault
LOG_ORPHAN = "log_orphan"  # a log entry without its row: the row was removed
LOG_GAP = "log_gap"  # log indexes missing in the middle
LOG_ORDER = "log_order"  # a device's records logged out of order, or its newest not last
LOG_TRUNCATED = "log_truncated"  # shorter than a checkpoint: cut, or rolled back to a copy
CHECKPOINT_INCONSISTENT = "checkpoint_inconsistent"  # the log no longer extends it
CHECKPOINT_BAD_SIGNATURE = "checkpoint_bad_signature"  # a known key's signature fails
CHECKPOINT_UNTRUSTED = "checkpoint_untrusted"  # no signature by a key trusted here
CHECKPOINT_MALFORMED = "checkpoint_malformed"  # not a checkpoint note
CHECKPOINT_ORIGIN = "checkpoint_origin"  # a checkpoint of another vault
CHECKPOINT_MISSING = "checkpoint_missing"  # the vault signed checkpoints; its file is gone
CHECKPOINT_MISMATCH = "checkpoint_mismatch"  # a checkpoints row differs from its own note
WITNESS_EMPTY = "witness_empty"  # a witness directory holding no checkpoint of this vault
FACT_INVALID = "fact_invalid"  # a fact whose statement does not fit the vault
DOCK_MISMATCH = "dock_mismatch"  # a docks row whose certificate is for another key
CONSISTENT = "consistent"  # CheckpointResult.status of a checkpoint the log extends
SKIPPED = "skipped"  # CheckpointResult.status of a witness note of another vault


@dataclass(frozen=True)
class CheckpointResult:
    """What one checkpoint proved. `status` is CONSISTENT, SKIPPED or the problem's code."""

    source: str  # the file, or "checkpoints table #N"
    status: str
    detail: str
    size: int | None = None
    root: str | None = None  # base64, as in the note
    signers: tuple[str, ...] = ()  # key names whose signatures verified
    trust: str = ""  # "unit": a key the unit certified; "vault": a key the vault recorded
    own: bool = False  # one the vault kept itself (its table, its checkpoint file)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "status": self.status, "detail": self.detail,
                "size": self.size, "root": self.root, "signers": list(self.signers),
                "trust": self.trust, "own": self.own}


@dataclass
class Report:
    """Everything one `verify` found: the problems, the log's head and each checkpoint."""

    problems: list[Problem]
    origin: str
    log_size: int
    log_root: bytes
    checkpoints: list[CheckpointResult]
    trust: str  # what the checkpoints were checked against, in plain words

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "origin": self.origin, "log_size": self.log_size,
                "log_root": base64_text(self.log_root), "trust": self.trust,
                "checkpoints": [c.to_dict() for c in self.checkpoints],
                "problems": [p.__dict__ for p in self.problems]}


def base64_text(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Note:
    """A checkpoint note to check, and where it came from."""

    source: str  # in words: the file, or "checkpoints table #N"
    data: bytes
    witness: str | None = None  # the witness directory it was found in, if any
    path: str = ""  # Problem.path of what is wrong with it (default: `source`)
    own: bool = False  # kept by the vault itself


@dataclass
class Anchors:
    """What the vault is checked against from outside itself."""

    notes: list[Note] = field(default_factory=list)
    witness_dirs: list[str] = field(default_factory=list)
    unit_key: bytes | None = None
    dock_certs: list[bytes] = field(default_factory=list)

    @classmethod
    def load(cls, checkpoints: Iterable[str | Path], witness: Iterable[str | Path],
             unit_key: bytes | None, dock_certs: Iterable[bytes]) -> Anchors:
        """Read the checkpoint files and every file of the witness directories; VaultError if
        one cannot be read or the unit key is not 32 bytes."""
        if unit_key is not None and (not isinstance(unit_key, bytes) or len(unit_key) != 32):
            raise VaultError("the unit key is a 32-byte Ed25519 public key")
        anchors = cls(unit_key=unit_key, dock_certs=[bytes(c) for c in dock_certs])
        for path in checkpoints:
            anchors.notes.append(Note(str(path), _read(Path(path), "checkpoint")))
        for directory in witness:
            d = Path(directory)
            if not d.is_dir():
                raise VaultError(f"witness {d} is not a directory")
            anchors.witness_dirs.append(str(d))
            for path in sorted(d.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    anchors.notes.append(Note(str(path), _read(path, "checkpoint"), str(d)))
        return anchors


def _read(path: Path, what: str) -> bytes:
    """A note file's bytes; one larger than a note can be is cut short (and then reported as
    malformed, not read whole)."""
    try:
        with path.open("rb") as f:
            return f.read(notes.MAX_NOTE_BYTES + 1)
    except OSError as exc:
        raise VaultError(f"cannot read {what} {path}: {exc.strerror}") from exc


_RECORD_COLUMNS = ("seq", "kind", "record_sha256", "prev", "segment_sha256", "size", "t_start",
                   "t_end", "clock_state", "tracks", "policy", "truncated", "data_state",
                   "chain_break")
_EVENT_COLUMNS = ("kind", "name", "t", "phase_row", "case_no", "officer", "detail")


class Verifier:
    """One pass of `Vault.verify`: collects Problems, remembers which files the index names."""

    def __init__(self, root: Path, db: sqlite3.Connection,
                 anchors: Anchors | None = None) -> None:
        self.root = root
        self.db = db
        self.anchors = anchors or Anchors()
        self.problems: list[Problem] = []
        self.entries: list[bytes] = []  # the log's entries, in order, as found
        self.indexed: set[str] = set()  # manifest and object paths the index accounts for
        self.hashed: dict[str, tuple[bytes, int] | None] = {}  # object path -> (sha256, size)
        self.retained: dict[str, str] = {}  # record/<device>/<seq> -> object the job removed

    def add(self, code: str, path: Path | str, detail: str) -> None:
        rel = path.relative_to(self.root).as_posix() if isinstance(path, Path) else path
        self.problems.append(Problem(code, rel, detail))

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def run(self, progress: Callable[[int, int], None] | None) -> list[Problem]:
        return self.report(progress).problems

    def report(self, progress: Callable[[int, int], None] | None) -> Report:
        self.check_database()
        self.retained = self.guarded("the retention register", self.removals) or {}
        total = int(self.db.execute("SELECT count(*) FROM records").fetchone()[0])
        done = 0
        devices = self.db.execute(
            "SELECT device_id, public_key, key_id FROM devices ORDER BY device_id"
        ).fetchall()
        for device_id, public_key, kid in devices:
            public_key = bytes(public_key)
            if bytes(kid) != evidence.key_id(public_key):
                self.add("index_mismatch", schema.DB_NAME,
                         f"{device_id}: key id does not match its key")
            expect_seq, prev = 1, manifest.GENESIS
            cur = self.db.execute(
                "SELECT * FROM records WHERE device_id = ? ORDER BY seq", (device_id,))
            names = [d[0] for d in cur.description]
            for values in cur.fetchall():
                row = dict(zip(names, values, strict=True))
                self.check_record(public_key, device_id, expect_seq, prev, row)
                expect_seq, prev = int(row["seq"]) + 1, bytes(row["record_sha256"])
                done += 1
                if progress is not None:
                    progress(done, total)
        self.guarded("hall footage", self.check_hall)
        self.check_unindexed()
        self.check_quarantine()
        self.guarded("events", self.check_stray_events)
        leaves = self.guarded("the log", self.check_log) or []
        self.guarded("facts", self.check_facts)
        self.guarded("docks", self.check_docks)
        results, root = self.guarded("checkpoints", lambda: self.check_checkpoints(leaves)) or (
            [], log.root(leaves))
        return Report(self.problems, self.origin(), len(leaves), root, results, self.trust())

    def removals(self) -> dict[str, str]:
        """record/<device>/<seq> -> object hex, for each removal by the retention job (a row of
        the custody register: host_agent/custody/retention.py)."""
        out = {}
        for subject, text in self.db.execute(
                "SELECT subject, fields FROM custody WHERE what = 'retention'"):
            try:
                out[str(subject)] = str(json.loads(text)["object"])
            except (ValueError, KeyError, TypeError):
                self.add("index_mismatch", schema.DB_NAME,
                         f"the retention entry for {subject} does not name an object")
        return out

    def guarded(self, what: str, check: Callable[[], _T]) -> _T | None:
        """Run a check of tables someone may have dropped or redefined: a database error is a
        problem to report (besides schema_altered), not a traceback."""
        try:
            return check()
        except sqlite3.Error as exc:
            self.add("db_corrupt", schema.DB_NAME, f"cannot check {what}: {exc}")
            return None

    def check_database(self) -> None:
        rows = self.db.execute("PRAGMA integrity_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            self.add("db_corrupt", schema.DB_NAME, "; ".join(str(r[0]) for r in rows[:5]))
        if self.db.execute("PRAGMA foreign_key_check").fetchone() is not None:
            self.add("db_corrupt", schema.DB_NAME, "rows refer to rows that do not exist")
        reference = sqlite3.connect(":memory:")
        try:
            reference.executescript(schema.SCHEMA)
            expected = _schema_rows(reference)
        finally:
            reference.close()
        found = _schema_rows(self.db)
        for key in sorted(expected.keys() | found.keys()):
            kind, name = key
            if key not in found:
                self.add("schema_altered", schema.DB_NAME, f"{kind} {name} is missing")
            elif key not in expected:
                self.add("schema_altered", schema.DB_NAME, f"{kind} {name} is not the vault's")
            elif found[key] != expected[key]:
                self.add("schema_altered", schema.DB_NAME, f"{kind} {name} was redefined")

    def check_record(self, public_key: bytes, device_id: str, expect_seq: int, prev: bytes,
                     row: dict[str, Any]) -> None:
        seq = int(row["seq"])
        what = f"record {seq} of {device_id}"
        man = manifest_path(self.root, device_id, seq)
        self.indexed.add(self.rel(man))
        if row["segment_sha256"] is not None:  # accounted for even if the manifest is gone
            self.indexed.add(self.rel(object_path(self.root, bytes(row["segment_sha256"]))))
        try:
            data = man.read_bytes()
        except FileNotFoundError:
            self.add("manifest_missing", man, f"{what}: signed record file is missing")
            return
        rec_sha = manifest.record_hash(data)
        if rec_sha != bytes(row["record_sha256"]):
            self.add("record_mismatch", man, f"{what}: bytes differ from the record stored")
        try:
            fields = evidence.open_record(data, public_key, device_id)
        except evidence.EvidenceError as exc:
            self.add(exc.code, man, f"{what}: {exc.detail}")
            return
        if fields["seq"] != seq:
            self.add("index_mismatch", man, f"{what}: the file holds record {fields['seq']}")
            return
        if row["chain_break"] is None:
            try:
                evidence.check_link(fields, expect_seq, prev)
            except evidence.EvidenceError as exc:
                code = "chain_gap" if seq != expect_seq else exc.code
                self.add(code, man, f"{what}: {exc.detail}")
        self.check_columns(what, fields, rec_sha, row)
        if fields["kind"] == manifest.KIND_SEGMENT:
            if row["data_state"] == "stored":
                self.check_object(fields, f"segment {seq} of {device_id}",
                                  self.retained.get(f"record/{device_id}/{seq}"))
            else:
                self.check_data_quarantined(device_id, fields, rec_sha, row["data_state"], what)
        else:
            self.check_event(device_id, fields, what)

    def check_columns(self, what: str, fields: dict[str, Any], rec_sha: bytes,
                      row: dict[str, Any]) -> None:
        signed = signed_columns(fields, rec_sha)
        for name, value in signed.items():
            held = bytes(row[name]) if isinstance(row[name], bytes | memoryview) else row[name]
            if held != value:
                self.add("index_mismatch", schema.DB_NAME,
                         f"{what}: column {name} differs from the signed record")
        is_segment = fields["kind"] == manifest.KIND_SEGMENT
        if is_segment != (row["data_state"] is not None):
            self.add("index_mismatch", schema.DB_NAME, f"{what}: data_state does not fit")

    def check_event(self, device_id: str, fields: dict[str, Any], what: str) -> None:
        cur = self.db.execute(
            "SELECT kind, name, t, phase_row, case_no, officer, detail FROM events"
            " WHERE device_id = ? AND seq = ?", (device_id, fields["seq"]))
        got = cur.fetchone()
        name, detail, phase = event_columns(fields)
        t = signed_columns(fields, b"")["t_start"]
        want = (fields["kind"], name, t, phase.get("row"), phase.get("case"),
                phase.get("officer"), detail)
        if got is None:
            self.add("index_mismatch", schema.DB_NAME, f"{what}: its events row is missing")
            return
        for column, held, value in zip(_EVENT_COLUMNS, got, want, strict=True):
            if held != value:
                self.add("index_mismatch", schema.DB_NAME,
                         f"{what}: events column {column} differs from the signed record")

    def check_object(self, fields: dict[str, Any], segment: str,
                     removed: str | None = None) -> None:
        """The segment's bytes, unless the retention job removed them (`removed`: the object
        its register row names)."""
        obj = object_path(self.root, fields["sha256"])
        self.indexed.add(self.rel(obj))  # (a run cut short may have left it: not a stray)
        if removed is not None:
            if removed != fields["sha256"].hex():
                self.add("index_mismatch", schema.DB_NAME,
                         f"{segment}: the retention register names another object")
            return
        key = self.rel(obj)
        self.indexed.add(key)
        if key not in self.hashed:
            try:
                self.hashed[key] = hash_file(obj)
            except FileNotFoundError:
                self.hashed[key] = None
        got = self.hashed[key]
        if got is None:
            self.add("object_missing", obj, f"{segment}: data file is missing")
        elif got[0] != fields["sha256"]:
            self.add("hash_mismatch", obj, f"{segment}: SHA-256 differs from its signed manifest")
        elif got[1] != fields["size"]:
            self.add("size_mismatch", obj,
                     f"{segment}: {got[1]} bytes, signed manifest says {fields['size']}")

    def check_data_quarantined(self, device_id: str, fields: dict[str, Any], rec_sha: bytes,
                               state: str, what: str) -> None:
        """A segment stored with its data in quarantine must have that quarantine entry."""
        row = self.db.execute(
            "SELECT code, path, segment_sha256 FROM quarantine WHERE device_id = ? AND seq = ?"
            " AND record_sha256 = ? AND code IN (?, ?)",
            (device_id, fields["seq"], rec_sha, evidence.SIZE_MISMATCH, evidence.HASH_MISMATCH),
        ).fetchone()
        if row is None:
            self.add("object_missing", schema.DB_NAME,
                     f"{what}: data {state}, but no quarantine entry says why")
        elif (row[2] is None) != (state == "missing"):
            self.add("index_mismatch", schema.DB_NAME,
                     f"{what}: data {state} does not fit its quarantine entry {row[1]}")

    def check_hall(self) -> None:
        """Footage no recorder signed, imported into a case (host_agent/custody/hall.py): its
        register row names the object's SHA-256 and size."""
        for row_id, text in self.db.execute(
                "SELECT id, fields FROM custody WHERE what = 'hall'"):
            try:
                fields = json.loads(text)
                sha, size = bytes.fromhex(fields["object"]), int(fields["size"])
            except (ValueError, KeyError, TypeError):
                self.add("index_mismatch", schema.DB_NAME,
                         f"hall footage entry {row_id} does not name its object")
                continue
            self.check_object({"sha256": sha, "size": size, "seq": 0},
                              f"hall footage {row_id}")

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
        rows = self.db.execute(
            "SELECT path, record_sha256, segment_sha256, segment_size FROM quarantine")
        for rel, rec_sha, seg_sha, seg_size in rows:
            listed.add(rel)
            qdir = self.root / rel
            if not (qdir / "reason.json").is_file():
                self.add("quarantine_missing", rel,
                         "quarantined item or its reason.json is missing")
                continue
            if rec_sha is not None:
                try:
                    if manifest.record_hash((qdir / "record.cose").read_bytes()) != rec_sha:
                        self.add("quarantine_altered", rel, "record.cose is not what came")
                except FileNotFoundError:
                    self.add("quarantine_missing", rel, "record.cose is missing")
            if seg_sha is not None:
                try:
                    if hash_file(qdir / "segment.bin") != (bytes(seg_sha), seg_size):
                        self.add("quarantine_altered", rel, "segment.bin is not what came")
                except FileNotFoundError:
                    self.add("quarantine_missing", rel, "segment.bin is missing")
        qroot = self.root / "quarantine"
        if qroot.is_dir():
            for entry in sorted(qroot.iterdir()):
                if self.rel(entry) not in listed:
                    self.add("unindexed", entry, "quarantine entry not in the index")


    def check_stray_events(self) -> None:
        """An events row belongs to an event or gap record, never to a segment."""
        rows = self.db.execute(
            "SELECT e.device_id, e.seq FROM events e JOIN records r"
            " ON r.device_id = e.device_id AND r.seq = e.seq WHERE r.kind = ?",
            (manifest.KIND_SEGMENT,))
        for device_id, seq in rows:
            self.add("index_mismatch", schema.DB_NAME,
                     f"record {seq} of {device_id} is a segment but has an events row")

    # -- the log -------------------------------------------------------------------------------

    def origin(self) -> str:
        try:
            return notes.origin_of(str(meta_row(self.db).get("vault_id") or ""))
        except sqlite3.Error:
            return notes.origin_of("")

    def check_log(self) -> list[bytes]:
        """Recompute the log's leaves from its entries; match every row with its entry."""
        leaves: list[bytes] = []
        by_ref: dict[str, int] = {}
        records: list[tuple[str, int, int]] = []  # (device, seq, idx) in log order
        cur = self.db.execute("SELECT idx, ref, entry, leaf FROM log ORDER BY idx")
        for idx, ref, entry, leaf in cur:
            entry = bytes(entry)
            position = len(leaves)
            if idx != position:
                self.add(LOG_GAP, schema.DB_NAME,
                         f"log entries {position}..{idx - 1} are missing: removed from the log")
            h = log.leaf_hash(entry)
            if bytes(leaf) != h:
                self.add(LOG_MISMATCH, schema.DB_NAME,
                         f"log entry {idx}: its stored leaf is not the hash of its entry")
            leaves.append(h)
            self.entries.append(entry)
            ref = str(ref)
            if ref in by_ref:
                self.add(LOG_MISMATCH, schema.DB_NAME,
                         f"log entries {by_ref[ref]} and {idx} both stand for {_what(ref)}")
                continue
            by_ref[ref] = position
            if ref.startswith("records/"):
                _, device_id, seq = ref.split("/", 2)
                if seq.isdigit():
                    records.append((device_id, int(seq), position))
        unmatched = dict(by_ref)
        for table in schema.LOGGED:
            for row in self._rows(table):
                self._match(table, row, unmatched)
        for ref, position in sorted(unmatched.items(), key=lambda item: item[1]):
            self.add(LOG_ORPHAN, schema.DB_NAME,
                     f"log entry {position} stands for {_what(ref)}, which the vault no longer"
                     " holds: the row was removed")
        self._check_record_order(records, by_ref, set(unmatched))
        return leaves

    def _rows(self, table: str) -> Iterable[dict[str, Any]]:
        if table == "meta":
            yield meta_row(self.db)
            return
        cur = self.db.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cur.description]
        for values in cur:
            yield dict(zip(names, values, strict=True))

    def _match(self, table: str, row: dict[str, Any], unmatched: dict[str, int]) -> None:
        ref = schema.log_ref(table, row)
        position = unmatched.pop(ref, None)
        try:
            want = schema.log_fields(table, row)
            entry = bytes(cbor.encode(want))
        except cbor.CBORError as exc:
            self.add(LOG_MISMATCH, schema.DB_NAME,
                     f"{_what(ref)} holds a value no log entry can: {exc}")
            return
        if position is None:
            self.add(LOG_MISSING, schema.DB_NAME,
                     f"{_what(ref)} has no log entry: it was added outside the vault, or its"
                     " entry was removed")
            return
        logged = self.entries[position]
        if logged == entry:
            return
        try:
            held = cbor.decode(logged)
        except cbor.CBORError:
            held = None
        if isinstance(held, dict):
            differ = sorted(k for k in set(want) | set(held) if held.get(k) != want.get(k))
            which = ", ".join(differ) or "its encoding"
        else:
            which = "all of it (the entry is not a CBOR map)"
        self.add(LOG_MISMATCH, schema.DB_NAME,
                 f"{_what(ref)} differs from log entry {position} in {which}: altered after it"
                 " was logged")

    def _check_record_order(self, records: list[tuple[str, int, int]],
                            by_ref: dict[str, int], orphans: set[str]) -> None:
        """Each device's records are logged in seq order, and its newest record is logged
        last: the log's tail accounts for every device's latest record."""
        last: dict[str, tuple[int, int]] = {}
        for device_id, seq, position in records:
            before = last.get(device_id)
            if before is not None and seq <= before[0]:
                self.add(LOG_ORDER, schema.DB_NAME,
                         f"record {seq} of {device_id} is logged (entry {position}) after record"
                         f" {before[0]} (entry {before[1]})")
            last[device_id] = (seq, position)
        newest = self.db.execute("SELECT device_id, max(seq) FROM records GROUP BY device_id")
        for device_id, seq in newest:
            logged = last.get(device_id)
            if (logged is None or logged[0] == seq or f"records/{device_id}/{seq}" not in by_ref
                    or f"records/{device_id}/{logged[0]}" in orphans):
                continue  # in order, or already reported as a row without entry or vice versa
            self.add(LOG_ORDER, schema.DB_NAME,
                     f"the newest record of {device_id} is {seq}, but the last one logged is"
                     f" {logged[0]}")

    def _entry_at(self, index: int) -> dict[str, Any] | None:
        if not 0 <= index < len(self.entries):
            return None
        try:
            entry = cbor.decode(self.entries[index])
        except cbor.CBORError:
            return None
        return entry if isinstance(entry, dict) else None

    def _public_key(self, device_id: str) -> bytes | None:
        row = self.db.execute("SELECT public_key FROM devices WHERE device_id = ?",
                              (device_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def check_facts(self) -> None:
        """Each fact still fits what it states (store.check_fact)."""
        docks = {authority.key_id(bytes(k)): bytes(k)
                 for (k,) in self.db.execute("SELECT public_key FROM docks")}
        cur = self.db.execute("SELECT id, kind, device_id, fields FROM facts ORDER BY id")
        for fid, kind, device_id, blob in cur.fetchall():
            try:
                fields = cbor.decode(bytes(blob))
                if not isinstance(fields, dict):
                    raise VaultError("its fields are not a map")
                named = check_fact(str(kind), fields, self._public_key, self._entry_at,
                                   docks.get)
                if named != device_id:
                    raise VaultError(f"it is filed under {device_id!r}, its statement names"
                                     f" {named!r}")
            except (VaultError, cbor.CBORError) as exc:
                self.add(FACT_INVALID, schema.DB_NAME, f"fact {fid} ({kind}): {exc}")

    def check_docks(self) -> None:
        for did, name, key, cert in self.db.execute(
                "SELECT id, name, public_key, cert FROM docks ORDER BY id"):
            if cert is None:
                continue
            try:
                if cert_key(bytes(cert)) != bytes(key):
                    raise VaultError("its certificate is for another key")
            except VaultError as exc:
                self.add(DOCK_MISMATCH, schema.DB_NAME, f"dock key {did} ({name}): {exc}")

    # -- checkpoints ---------------------------------------------------------------------------

    def trusted_keys(self) -> list[tuple[str | None, bytes]]:
        """(name or None for any name, key) of the keys whose checkpoint signatures count: with
        a unit key, the dock keys a certificate from that unit names; else the vault's docks."""
        unit_key = self.anchors.unit_key
        docks = [(str(n), bytes(k), None if c is None else bytes(c))
                 for n, k, c in self.db.execute("SELECT name, public_key, cert FROM docks")]
        if unit_key is None:
            return [(name, key) for name, key, _ in docks]
        keys: list[tuple[str | None, bytes]] = []
        for cert in [c for _, _, c in docks if c is not None] + self.anchors.dock_certs:
            try:
                doc = authority.open_cert(cert, unit_key, notes.ed25519_ok)
            except authority.AuthorityError:
                continue
            if (None, bytes(doc["key"])) not in keys:
                keys.append((None, bytes(doc["key"])))
        return keys

    def trust(self) -> str:
        outside = self.anchors.notes
        if self.anchors.unit_key is not None:
            text = ("checkpoint signatures were checked against the dock keys certified by the"
                    f" unit key {self.anchors.unit_key.hex()}")
        else:
            text = ("checkpoint signatures were checked only against the dock keys this vault"
                    " recorded itself (weaker: whoever can rewrite the vault can record a key of"
                    " their own; give --unit-key to check them against the unit's key)")
        if not outside:
            text += ("; no checkpoint kept outside the vault was given, so a vault cut or rolled"
                     " back as a whole, with its own checkpoints, cannot be told from a good one"
                     " (give --checkpoint or --witness)")
        return text

    def check_checkpoints(self, leaves: list[bytes]) -> tuple[list[CheckpointResult], bytes]:
        """Check every checkpoint: the vault's own (table and file) and the anchors'. Returns
        the results and the root of the whole log (computed in the same pass)."""
        own: list[Note] = []
        stored = self.db.execute(
            "SELECT id, size, root, key_name, note FROM checkpoints ORDER BY id").fetchall()
        for cid, size, root, key_name, text in stored:
            data = str(text).encode()
            own.append(Note(f"checkpoints table #{cid}", data, path=schema.DB_NAME, own=True))
            try:
                cp = notes.parse(data)
            except notes.CheckpointError:
                continue  # reported as malformed below
            if (cp.size, cp.root) != (size, bytes(root)) or key_name not in [
                    s.name for s in cp.signatures]:
                self.add(CHECKPOINT_MISMATCH, schema.DB_NAME,
                         f"checkpoints table #{cid}: its size, root or key name is not its note's")
        file = self.root / CHECKPOINT_FILE
        if file.is_file():
            own.append(Note("the vault's checkpoint file", _read(file, "checkpoint"),
                            path=CHECKPOINT_FILE, own=True))
        elif stored:
            self.add(CHECKPOINT_MISSING, CHECKPOINT_FILE,
                     f"the vault signed {len(stored)} checkpoint(s) but its {CHECKPOINT_FILE}"
                     " file is gone")
        origin = self.origin()
        keys = self.trusted_keys()
        trust = "unit" if self.anchors.unit_key is not None else "vault"
        results: list[CheckpointResult] = []
        pending: list[tuple[Note, notes.Checkpoint, tuple[str, ...]]] = []
        seen_in: set[str] = set()
        for note in own + self.anchors.notes:
            try:
                cp = notes.parse(note.data)
            except notes.CheckpointError as exc:
                results.append(self._result(note, CHECKPOINT_MALFORMED,
                                            f"not a checkpoint note: {exc}"))
                continue
            if cp.origin != origin:
                if note.witness is not None:
                    results.append(CheckpointResult(note.source, SKIPPED,
                                                    f"a checkpoint of {cp.origin}", cp.size,
                                                    base64_text(cp.root)))
                else:
                    results.append(self._result(
                        note, CHECKPOINT_ORIGIN, f"a checkpoint of {cp.origin}, not of this"
                        f" vault ({origin})", cp))
                continue
            if note.witness is not None:
                seen_in.add(note.witness)
            signers, failed, strangers = _signatures(cp, keys)
            if failed:
                results.append(self._result(
                    note, CHECKPOINT_BAD_SIGNATURE, f"the signature of {', '.join(failed)} does"
                    " not verify: the note was altered or forged", cp))
            elif not signers:
                who = ", ".join(strangers) or "nobody"
                why = ("a key the unit never certified (no certificate from the unit key for it,"
                       " in the vault or given with --dock-cert)"
                       if self.anchors.unit_key is not None else
                       "a key this vault has not recorded as a dock's")
                results.append(self._result(note, CHECKPOINT_UNTRUSTED,
                                            f"signed by {who}: {why}", cp))
            else:
                pending.append((note, cp, signers))
        for directory in self.anchors.witness_dirs:
            if directory not in seen_in:
                self.add(WITNESS_EMPTY, directory,
                         "the witness directory holds no checkpoint of this vault")
        roots = log.roots_at(leaves, [cp.size for _, cp, _ in pending] + [len(leaves)])
        for note, cp, signers in pending:
            by = " and ".join(signers)
            if cp.size > len(leaves):
                status = LOG_TRUNCATED
                detail = (f"checkpoint signed by {by} covers {cp.size} log entries, the vault"
                          f" holds {len(leaves)}: the newest {cp.size - len(leaves)} were cut,"
                          " or the vault was rolled back to an older copy")
            elif roots[cp.size] != cp.root:
                status = CHECKPOINT_INCONSISTENT
                detail = (f"the first {cp.size} log entries no longer hash to the root {by}"
                          " signed: entries were rewritten, removed or inserted, or the vault"
                          " was replaced by a copy that went another way")
            else:
                status, detail = CONSISTENT, (f"the log ({len(leaves)} entries) extends this"
                                              f" checkpoint of {cp.size}, signed by {by}")
            results.append(self._result(note, status, detail, cp, signers, trust))
        return results, roots[len(leaves)]

    def _result(self, note: Note, status: str, detail: str, cp: notes.Checkpoint | None = None,
                signers: tuple[str, ...] = (), trust: str = "") -> CheckpointResult:
        if status != CONSISTENT:
            self.add(status, note.path or note.source, f"{note.source}: {detail}")
        return CheckpointResult(note.source, status, detail,
                                None if cp is None else cp.size,
                                None if cp is None else base64_text(cp.root), signers, trust,
                                note.own)


def _signatures(cp: notes.Checkpoint, keys: list[tuple[str | None, bytes]]
                ) -> tuple[tuple[str, ...], list[str], list[str]]:
    """(names whose signature verified, names whose signature failed, names of unknown keys)."""
    good: list[str] = []
    bad: list[str] = []
    unknown: list[str] = []
    for sig in cp.signatures:
        known = [k for name, k in keys
                 if (name is None or name == sig.name) and notes.key_hash(sig.name, k) ==
                 sig.key_hash]
        if not known:
            unknown.append(f"{sig.name} (key hash {sig.key_hash.hex()})")
            continue
        if any(len(sig.signature) == notes.ED25519_SIGNATURE_SIZE
               and notes.ed25519_ok(k, cp.text, sig.signature) for k in known):
            good.append(sig.name)
        else:
            bad.append(sig.name)
    return tuple(dict.fromkeys(good)), bad, unknown


def _what(ref: str) -> str:
    """A log ref in words: "records/SIM-1/3" -> "record 3 of SIM-1"."""
    parts = ref.split("/")
    table = parts[0]
    if table == "records" and len(parts) == 3:
        return f"record {parts[2]} of {parts[1]}"
    if table == "devices" and len(parts) == 2:
        return f"the enrolment of {parts[1]}"
    if table == "meta":
        return "the vault's identity (meta)"
    names = {"quarantine": "quarantine entry", "dockings": "docking report", "facts": "fact",
             "docks": "dock key"}
    if table in names and len(parts) == 2:
        return f"{names[table]} {parts[1]}"
    return ref


def _schema_rows(db: sqlite3.Connection) -> dict[tuple[str, str], tuple[str, str]]:
    """(type, name) -> (table, SQL) of every table, index and trigger a database defines."""
    rows = db.execute(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master"
        " WHERE name NOT LIKE 'sqlite_%'").fetchall()
    return {(t, n): (tbl, " ".join(sql.split())) for t, n, tbl, sql in rows}
