"""`Vault.verify`: re-check the whole vault from its files, trusting the index for nothing.

For each enrolled device, every record file in chain order: its bytes hash to the index row,
its signature verifies with the enrolled key, it continues the chain (or the index says where
and why it does not, `chain_break`), and every index column that comes from the signed record
(records and events alike) equals what the record says. Each segment's object hashes to its
signed SHA-256 and size; a segment whose data arrived wrong is in quarantine with those bytes.
Files nobody indexed, quarantine entries that are gone or altered, and a database schema other
than the vault's own (a dropped or rewritten append-only trigger, an extra trigger) are
reported too.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from host_agent.vault import evidence, schema
from host_agent.vault.files import hash_file
from host_agent.vault.store import event_columns, manifest_path, object_path
from protocol import manifest


@dataclass(frozen=True)
class Problem:
    """One thing `Vault.verify` found wrong; `path` is relative to the vault root."""

    code: str
    path: str
    detail: str


_RECORD_COLUMNS = ("seq", "kind", "record_sha256", "prev", "segment_sha256", "size", "t_start",
                   "t_end", "clock_state", "tracks", "policy", "truncated", "data_state",
                   "chain_break")
_EVENT_COLUMNS = ("kind", "name", "t", "phase_row", "case_no", "officer", "detail")


def signed_columns(fields: dict[str, Any], record_sha256: bytes) -> dict[str, Any]:
    """The records-table values a signed record determines, as the index must hold them."""
    clock = fields.get("clock")
    return {
        "seq": fields["seq"],
        "kind": fields["kind"],
        "record_sha256": record_sha256,
        "prev": fields["prev"],
        "segment_sha256": fields.get("sha256"),
        "size": fields.get("size"),
        "t_start": fields.get("t_start", fields.get("t", fields.get("t_last"))),
        "t_end": fields.get("t_end", fields.get("t", fields.get("t_boot"))),
        "clock_state": clock.get("state") if isinstance(clock, dict) else None,
        "tracks": json.dumps(fields["tracks"]) if "tracks" in fields else None,
        "policy": fields["policy"],
        "truncated": int(fields["truncated"]) if "truncated" in fields else None,
    }


class Verifier:
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
        self.check_unindexed()
        self.check_quarantine()
        return self.problems

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
                self.check_object(fields, f"segment {seq} of {device_id}")
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

    def check_object(self, fields: dict[str, Any], segment: str) -> None:
        obj = object_path(self.root, fields["sha256"])
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


def _schema_rows(db: sqlite3.Connection) -> dict[tuple[str, str], tuple[str, str]]:
    """(type, name) -> (table, SQL) of every table, index and trigger a database defines."""
    rows = db.execute(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master"
        " WHERE name NOT LIKE 'sqlite_%'").fetchall()
    return {(t, n): (tbl, " ".join(sql.split())) for t, n, tbl, sql in rows}
