"""The vault's format: its SQLite index (tables, append-only triggers, what the log commits
to), where its files go, and how an event row is derived from a signed record.

    meta(key, value)                layout version ("layout" = LAYOUT), created_at, vault_id
                                    (random, made at creation: the log's origin names it)
    devices(device_id, public_key, key_id, enrolled_at, enrolled_by, note)
                                    one key per device and one device per key
    records(device_id, seq, kind, record_sha256, prev, segment_sha256, size, t_start, t_end,
            clock_state, tracks, policy, truncated, data_state, chain_break, stored_at)
                                    PRIMARY KEY (device_id, seq). data_state: "stored" (the
                                    segment is in objects/), "quarantined" (its bytes arrived
                                    other than signed and are in quarantine/), "missing" (the
                                    recorder had none), NULL (events and gaps carry no data).
                                    chain_break: NULL, or why this record does not continue
                                    the chain the vault held before it
    events(device_id, seq, kind, name, t, phase_row, case_no, officer, detail)
                                    the event and gap records, indexed by case for reports
    quarantine(id, device_id, seq, record_sha256, segment_sha256, segment_size, complete, code,
               detail, path, at)    complete = 1 when it holds all the recorder offered, so
                                    the recorder may free it
    dockings(id, device_id, at, report)       report = JSON text
    facts(id, kind, device_id, at, fields)    signed statements the dock hands in: kind "head"
                                    (a recorder's last record) or "receipt" (the dock's
                                    release receipt); fields = deterministic CBOR map
    docks(id, name, public_key, cert, at)     the keys that signed checkpoints, each with the
                                    unit's certificate for it (COSE_Sign1) when it had one
    log(idx, kind, ref, entry, leaf)          the append-only Merkle log (host_agent/vault/log.py):
                                    idx = 0, 1, 2, … with no gap; entry = deterministic CBOR
                                    (`log_entry`); leaf = SHA-256(0x00 || entry); ref names the
                                    row the entry commits to ("records/<device>/<seq>", …)
    checkpoints(id, size, root, key_name, note, at)
                                    every checkpoint the vault signed (a C2SP signed note)
    custody(id, what, at, actor, subject, fields)
                                    the records office's register (host_agent/custody/):
                                    people and their clearance, access requests and their
                                    approval, every view, copy, export and refusal,
                                    classifications, holds, retention removals, the recorders'
                                    issue and return, hall footage; fields = JSON text.
                                    verify reads two kinds: "retention" (fields.object: the
                                    segment bytes the job removed, lawfully absent) and "hall"
                                    (fields.object, size: footage in objects/)

The log: every row of devices, records, quarantine, dockings, facts, docks and custody, and
the vault's identity in meta, has exactly one log entry, appended in the same transaction as
the row. The entry holds the table's kind and every column of the row that no signed record
vouches for; for records, the record's hash stands for all its signed columns (and the events
row, also rebuilt from the signed record), which `verify` compares with the signed file.

Every table but meta refuses UPDATE and DELETE from any connection (triggers), and refuses an
INSERT whose key is already there (so INSERT OR REPLACE cannot delete a row through the
back door, whatever the connection's recursive_triggers); log entries are only appended at the
next index.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from protocol import cbor, manifest

LAYOUT = "bodycam-vault/2"
DB_NAME = "vault.sqlite"
APPEND_ONLY = ("devices", "records", "events", "quarantine", "dockings", "facts", "docks",
               "log", "checkpoints", "custody")
FACT_KINDS = ("head", "receipt")

TABLES = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE devices (
    device_id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL UNIQUE,
    key_id BLOB NOT NULL UNIQUE,
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
    data_state TEXT CHECK (data_state IN ('stored', 'quarantined', 'missing')),
    chain_break TEXT,
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
    record_sha256 BLOB,
    segment_sha256 BLOB,
    segment_size INTEGER,
    complete INTEGER NOT NULL CHECK (complete IN (0, 1)),
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    path TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX quarantine_by_record ON quarantine(device_id, record_sha256);
CREATE TABLE dockings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT,
    at TEXT NOT NULL,
    report TEXT NOT NULL CHECK (json_valid(report))
);
CREATE TABLE facts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('head', 'receipt')),
    device_id TEXT,
    at TEXT NOT NULL,
    fields BLOB NOT NULL
);
CREATE TABLE docks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    public_key BLOB NOT NULL CHECK (length(public_key) = 32),
    cert BLOB,
    at TEXT NOT NULL
);
CREATE TABLE log (
    idx INTEGER PRIMARY KEY CHECK (idx >= 0),
    kind TEXT NOT NULL,
    ref TEXT NOT NULL UNIQUE,
    entry BLOB NOT NULL,
    leaf BLOB NOT NULL CHECK (length(leaf) = 32)
);
CREATE TABLE checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    size INTEGER NOT NULL CHECK (size >= 0),
    root BLOB NOT NULL CHECK (length(root) = 32),
    key_name TEXT NOT NULL,
    note TEXT NOT NULL,
    at TEXT NOT NULL
);
"""

# Added after the first vaults were made: `Vault.open` adds it to a vault that lacks it.
CUSTODY_TABLE = """
CREATE TABLE custody (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    what TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT NOT NULL,
    fields TEXT NOT NULL CHECK (json_valid(fields))
);
CREATE INDEX custody_by_subject ON custody(subject, id);
"""


def trigger_sql(table: str, op: str) -> str:
    """The exact SQL of the trigger that refuses `op` ("update" or "delete") on `table`."""
    verb = "altered" if op == "update" else "removed"
    return (f"CREATE TRIGGER {table}_no_{op} BEFORE {op.upper()} ON {table}\n"
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: evidence may not be {verb}'); "
            f"END")


# What makes a row of each table "already there": an INSERT matching it is refused, so that
# INSERT OR REPLACE (whose implicit delete fires no delete trigger unless recursive_triggers
# is on) cannot swap a row, nor an enrolled key.
_KEYS = {
    "devices": "device_id = NEW.device_id OR public_key = NEW.public_key OR key_id = NEW.key_id",
    "records": "device_id = NEW.device_id AND seq = NEW.seq",
    "events": "device_id = NEW.device_id AND seq = NEW.seq",
    "quarantine": "id = NEW.id",
    "dockings": "id = NEW.id",
    "facts": "id = NEW.id",
    "docks": "id = NEW.id",
    "checkpoints": "id = NEW.id",
    "custody": "id = NEW.id",
}


def replace_trigger_sql(table: str) -> str:
    """The exact SQL of the trigger that refuses an INSERT of a key `table` already holds (for
    the log: an entry anywhere but at the next index)."""
    if table == "log":
        return ("CREATE TRIGGER log_append_only BEFORE INSERT ON log\n"
                "WHEN NEW.idx IS NOT (SELECT coalesce(max(idx) + 1, 0) FROM log)\n"
                "BEGIN SELECT RAISE(ABORT, 'log is append-only: entries go at the next index');"
                " END")
    return (f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table}\n"
            f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {_KEYS[table]})\n"
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: a row with this key exists"
            f" and may not be replaced'); END")


TRIGGERS = {(t, op): trigger_sql(t, op) for t in APPEND_ONLY for op in ("update", "delete")}
TRIGGERS.update({(t, "insert"): replace_trigger_sql(t) for t in APPEND_ONLY})

SCHEMA = TABLES + CUSTODY_TABLE + "".join(sql + ";\n" for sql in TRIGGERS.values())
# What `Vault.open` adds to a vault made before the custody register.
CUSTODY_SCHEMA = CUSTODY_TABLE + "".join(sql + ";\n" for (t, _), sql in TRIGGERS.items()
                                         if t == "custody")


# -- what the log commits to -------------------------------------------------------------------

# table -> (entry kind, the columns naming the row, the columns the entry holds). For records,
# record_sha256 stands for every signed column; the others are what no signature vouches for.
LOGGED: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "meta": ("vault", (), ("vault_id", "layout", "created_at")),
    "devices": ("enrolment", ("device_id",),
                ("device_id", "public_key", "key_id", "enrolled_at", "enrolled_by", "note")),
    "records": ("record", ("device_id", "seq"),
                ("device_id", "seq", "record_sha256", "data_state", "chain_break",
                 "stored_at")),
    "quarantine": ("quarantine", ("id",),
                   ("id", "device_id", "seq", "record_sha256", "segment_sha256",
                    "segment_size", "complete", "code", "detail", "path", "at")),
    "dockings": ("docking", ("id",), ("id", "device_id", "at", "report")),
    "facts": ("", ("id",), ("id", "kind", "device_id", "at", "fields")),  # its own kind
    "docks": ("dock", ("id",), ("id", "name", "public_key", "cert", "at")),
    "custody": ("custody", ("id",), ("id", "what", "at", "actor", "subject", "fields")),
}


def log_ref(table: str, row: dict[str, Any]) -> str:
    """The name of the row a log entry commits to: "<table>/<key>/…" ("meta" for meta)."""
    keys = LOGGED[table][1]
    return "/".join([table] + [str(row[k]) for k in keys])


def log_kind(table: str, row: dict[str, Any]) -> str:
    """The entry kind of a row: the table's, or a fact's own kind."""
    kind = LOGGED[table][0]
    return kind or str(row["kind"])


def log_fields(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """What the log entry of a row holds: {"kind": …, and each logged column by name}."""
    entry: dict[str, Any] = {}
    for column in LOGGED[table][2]:
        value = row.get(column)
        entry[column] = bytes(value) if isinstance(value, memoryview) else value
    entry["kind"] = log_kind(table, row)
    return entry


def log_entry(table: str, row: dict[str, Any]) -> bytes:
    """The log entry of a row, as the table holds it: the deterministic CBOR of `log_fields`.
    Raises cbor.CBORError for a value CBOR cannot hold (a float written into the table by
    hand)."""
    return bytes(cbor.encode(log_fields(table, row)))


def now() -> str:
    """A time as the index keeps it: UTC ISO-8601, microseconds (2024-05-01T08:30:00.123456Z)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_dict(cur: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, object]:
    """A fetched row as {column: value}."""
    return {d[0]: row[i] for i, d in enumerate(cur.description)}


# -- the files' layout and the events table, as the index and verify both read them ----


def object_path(root: Path, sha256: bytes) -> Path:
    h = sha256.hex()
    return root / "objects" / h[:2] / h


def manifest_path(root: Path, device_id: str, seq: int) -> Path:
    return root / "manifests" / device_id / f"{seq:08d}.cose"


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


def event_columns(f: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(name, detail as JSON text, phase) of an event or gap record, as the events table holds
    them; verify compares the table with this, from the signed record."""
    phase = f.get("phase") or {}
    if f["kind"] == manifest.KIND_GAP:
        name = f["cause"]
        detail = {k: f[k] for k in ("last_seq", "t_last", "t_boot", "battery_main",
                                    "battery_backup")}
    else:
        name, detail = f["event"], f["detail"]
    return name, json.dumps(detail, default=json_default, sort_keys=True), phase


def json_default(value: object) -> object:
    """JSON for what the index keeps as text: bytes as hex, paths as text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
