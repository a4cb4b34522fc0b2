"""The vault's SQLite index: tables, and the triggers that make them append-only.

    meta(key, value)                layout version ("layout" = LAYOUT), created_at
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

Every table but meta refuses UPDATE and DELETE from any connection (triggers); the vault's own
connection also turns on recursive_triggers, so its INSERT OR REPLACE cannot delete either.
"""

LAYOUT = "bodycam-vault/2"
DB_NAME = "vault.sqlite"
APPEND_ONLY = ("devices", "records", "events", "quarantine", "dockings")

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
"""


def trigger_sql(table: str, op: str) -> str:
    """The exact SQL of the trigger that refuses `op` ("update" or "delete") on `table`."""
    verb = "altered" if op == "update" else "removed"
    return (f"CREATE TRIGGER {table}_no_{op} BEFORE {op.upper()} ON {table}\n"
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: evidence may not be {verb}'); "
            f"END")


TRIGGERS = {(t, op): trigger_sql(t, op) for t in APPEND_ONLY for op in ("update", "delete")}

SCHEMA = TABLES + "".join(sql + ";\n" for sql in TRIGGERS.values())
