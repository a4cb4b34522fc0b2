"""The central index in PostgreSQL (psycopg 3): every dock's log mirrored entry by entry, the
recorders' keys, every record once, the cosigned checkpoints, and every refusal.

    logs(origin, dock_id, dock_key, size, nodes, root, cosigned, flagged, updated)
        one row per dock vault (its log origin): how much of its log the central holds, the
        log's right edge (log.Frontier) to follow its root leaf by leaf, the last cosigned
        checkpoint, and why forwarding stopped (flagged) until a person clears it
    log_entries(origin, idx, kind, leaf, entry)    the mirror; a resent entry must match
    devices(device_id, public_key, origin, idx, at) the first certified dock to enrol a key
    records(device_id, seq, kind, record, record_sha256, prev, object_sha256, size,
            data_state, chain_break, case_no, origin, idx, at)
        every signed record once, byte-exact as signed; (device_id, seq) is the key
    refusals(id, at, origin, dock_id, reason)
    rebinds(id, at, origin, old_dock_id, old_dock_key, new_dock_id, new_dock_key, cert,
            by_name, reason)
        every time a person bound a log to another dock's key (`bodycam central rebind`: a
        vault moved to a new dock PC), with the unit's certificate of the new key

    uploads(object_sha256, size, dock_id, at)
        every object a dock was handed an upload for (the first time): a second request for
        it looks in the store before handing out another (no second version after a crash),
        and an object no record names can be traced to the dock that put it

log_entries, devices, records, refusals, rebinds and uploads refuse UPDATE and DELETE
(triggers): the central keeps evidence, and who changed what, as the vaults do.
"""

from __future__ import annotations

from typing import Any

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    origin text PRIMARY KEY,
    dock_id text NOT NULL,
    dock_key bytea NOT NULL,
    size bigint NOT NULL DEFAULT 0,
    nodes bytea[] NOT NULL DEFAULT '{}',
    root bytea,
    cosigned text,
    flagged text,
    updated timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS log_entries (
    origin text NOT NULL REFERENCES logs(origin),
    idx bigint NOT NULL,
    kind text NOT NULL,
    leaf bytea NOT NULL,
    entry bytea NOT NULL,
    PRIMARY KEY (origin, idx)
);
CREATE INDEX IF NOT EXISTS log_entries_mirrored ON log_entries(kind) WHERE kind IN ({mirrored});
CREATE TABLE IF NOT EXISTS devices (
    device_id text PRIMARY KEY,
    public_key bytea NOT NULL UNIQUE,
    origin text NOT NULL,
    idx bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS records (
    device_id text NOT NULL REFERENCES devices(device_id),
    seq bigint NOT NULL CHECK (seq >= 1),
    kind text NOT NULL,
    record bytea NOT NULL,
    record_sha256 bytea NOT NULL,
    prev bytea NOT NULL,
    object_sha256 bytea,
    size bigint,
    data_state text,
    chain_break text,
    case_no text,
    origin text NOT NULL,
    idx bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX IF NOT EXISTS records_by_case ON records(case_no);
CREATE TABLE IF NOT EXISTS refusals (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    origin text,
    dock_id text,
    reason text NOT NULL
);
CREATE TABLE IF NOT EXISTS rebinds (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    origin text NOT NULL REFERENCES logs(origin),
    old_dock_id text NOT NULL,
    old_dock_key bytea NOT NULL,
    new_dock_id text NOT NULL,
    new_dock_key bytea NOT NULL,
    cert bytea NOT NULL,
    by_name text NOT NULL,
    reason text NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    object_sha256 bytea PRIMARY KEY,
    size bigint NOT NULL,
    dock_id text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION bodycam_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: evidence may not be altered or removed', TG_TABLE_NAME;
END $$ LANGUAGE plpgsql;
"""
# the kinds of the docks' entries the records office at the centre reads (central/archive.py)
MIRRORED = ("custody", "docking", "dock")
MIRRORED_SQL = ", ".join(f"'{k}'" for k in MIRRORED)  # as the partial index names them
SCHEMA = SCHEMA.replace("{mirrored}", MIRRORED_SQL)
APPEND_ONLY = ("log_entries", "devices", "records", "refusals", "rebinds", "uploads")


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=False)


def create(dsn: str) -> None:
    """Make the tables (idempotent)."""
    with connect(dsn) as db:
        db.execute("SELECT pg_advisory_xact_lock(4242)")  # two services starting at once
        db.execute(SCHEMA)  # type: ignore[arg-type]
        append_only(db, APPEND_ONLY)
        db.commit()


def append_only(db: psycopg.Connection[Any], tables: tuple[str, ...]) -> None:
    """Make the tables refuse UPDATE and DELETE (idempotent; inside the caller's transaction,
    after SCHEMA)."""
    for table in tables:
        exists = db.execute("SELECT 1 FROM pg_trigger WHERE tgname = %s",
                            (f"{table}_append_only",)).fetchone()
        if exists is None:
            db.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON"  # type: ignore[arg-type]
                       f" {table} FOR EACH ROW EXECUTE FUNCTION bodycam_append_only()")


def overview(dsn: str, refusals: int = 10) -> dict[str, Any]:
    """What a person at the centre looks at: each dock log (how much of it the central holds,
    its records, the last cosigned size, whether it is flagged and why) and the latest
    refusals."""
    with connect(dsn) as db:
        counts = dict(db.execute("SELECT origin, count(*) FROM records GROUP BY origin"
                                 ).fetchall())
        logs = []
        for origin, dock_id, size, cosigned, flagged, updated in db.execute(
                "SELECT origin, dock_id, size, cosigned, flagged, updated FROM logs"
                " ORDER BY dock_id, origin"):
            lines = (cosigned or "").split("\n")
            logs.append({"origin": origin, "dock": dock_id, "entries": int(size),
                         "records": int(counts.get(origin, 0)),
                         "cosigned": int(lines[1]) if len(lines) > 1 and lines[1].isdigit()
                         else None, "flagged": flagged, "updated": updated.isoformat()})
        latest = [{"at": at.isoformat(), "origin": origin, "dock": dock, "reason": reason}
                  for at, origin, dock, reason in db.execute(
                      "SELECT at, origin, dock_id, reason FROM refusals ORDER BY id DESC"
                      " LIMIT %s", (refusals,))]
        total = db.execute("SELECT count(*) FROM refusals").fetchone()
    return {"logs": logs, "flagged": sum(1 for g in logs if g["flagged"]),
            "records": sum(counts.values()), "refusals": int(total[0]) if total else 0,
            "latest_refusals": latest}

