"""The records office at the centre: the central index as an `Archive`
(host_agent/custody/archive.py), so the access register, the export and the compliance report
run here as they do on a dock's vault.

What it reads is what the docks forwarded and the central re-verified (host_agent/central/
service.py): the recorders' keys (`devices`), every signed record once (`records`), the
segments in the S3 store, and the docks' logs mirrored entry by entry (`log_entries`: their
dockings, dock keys and register rows). Each record's index row is rebuilt from its signed
bytes (host_agent/vault/schema.signed_columns), as a vault's is, and the time the dock stored
it from the dock's log entry.

What it writes is its own, in tables beside the index (append-only, like the index):

    register(id, what, at, actor, subject, fields)        the central's register rows
    central_log(idx, kind, ref, entry, leaf)              its Merkle log (RFC 6962)
    central_checkpoints(id, size, root, note, at)         the checkpoints it signed
    central_signers(id, name, public_key, cert, at)       the keys that signed them
    central_meta(key, value)                              its origin

Entries of the central's log have the vault's formats (host_agent/vault/schema.log_entry):
its own register rows, the keys that signed its checkpoints, and — the first time an export
proves them — the docks' own entries for the records, enrolments and hall footage it hands
out, copied byte for byte from the mirror (`log_index` appends them then). So an export
package from the centre is checked by the same `bodycam verify`, against the same unit key:
the central's key needs the unit's certificate for it (config `cert`).

Only people registered at the centre act at the centre: the docks' register rows about
people, requests and acts are theirs and are not read here.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from host_agent.central import cosign, index
from host_agent.central.objects import Objects, StoreError
from host_agent.custody.archive import SHARED_KINDS, docking_problem, row_problem
from host_agent.vault import checkpoint as notes
from host_agent.vault import log, schema
from host_agent.vault.errors import VaultError
from protocol import cbor, cose, manifest

ORIGIN_PREFIX = "bodycam.central/"
WIDENING = ("evidence", "hall")  # a dock's rows that add to a case
LOG_LOCK = 4243  # pg_advisory_xact_lock key: one writer of the central's log at a time

SCHEMA = """
CREATE TABLE IF NOT EXISTS central_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS register (
    id bigserial PRIMARY KEY,
    what text NOT NULL,
    at text NOT NULL,
    actor text NOT NULL,
    subject text NOT NULL,
    fields text NOT NULL
);
CREATE INDEX IF NOT EXISTS register_by_subject ON register(subject, id);
CREATE TABLE IF NOT EXISTS central_log (
    idx bigint PRIMARY KEY CHECK (idx >= 0),
    kind text NOT NULL,
    ref text NOT NULL UNIQUE,
    entry bytea NOT NULL,
    leaf bytea NOT NULL CHECK (length(leaf) = 32)
);
CREATE TABLE IF NOT EXISTS central_checkpoints (
    id bigserial PRIMARY KEY,
    size bigint NOT NULL,
    root bytea NOT NULL,
    note text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS central_signers (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    public_key bytea NOT NULL,
    cert bytea,
    at text NOT NULL
);
"""
APPEND_ONLY = ("register", "central_log", "central_checkpoints", "central_signers",
               "central_meta")


@contextlib.contextmanager
def open_central(config: str | Path) -> Iterator[CentralArchive]:
    """The central index central.toml names, for the records office, with the office's own
    key (office_key, office_cert) to sign the checkpoints of its log. A database or store that
    fails is a VaultError, one line."""
    from host_agent.central.config import load
    from host_agent.keys import public_key

    cfg = load(config)
    unit = public_key(cfg.unit_key)
    signer = office_signer(cfg.path, cfg.office_key, cfg.office_cert, unit)
    try:
        index.create(cfg.database)
        archive = CentralArchive(cfg.database, cfg.store.objects(), signer, unit)
    except psycopg.Error as exc:
        raise VaultError(f"{cfg.path}: cannot use the database: {one_line(exc)}") from None
    try:
        yield archive
    except psycopg.Error as exc:
        raise VaultError(f"the central database: {one_line(exc)}") from None
    except StoreError as exc:
        raise VaultError(f"the central store: {one_line(exc)}") from None
    finally:
        archive.close()


def office_signer(where: str, key: str, cert: str, unit: bytes) -> cosign.KeyCosigner | None:
    """The records office's key with the unit's certificate for it, which must carry the right
    "records" alone: the office never holds a key a recorder or a dock would take (no
    offload, clock or policy right; not the central's cosigning key). None if not configured."""
    from host_agent.keys import load_key
    from host_agent.settings import SettingsError
    from protocol import authority

    if not key:
        return None
    try:
        data = Path(cert).read_bytes()
    except OSError as exc:
        raise SettingsError(f"{where}: office_cert {cert}: {exc.strerror}") from None
    try:
        doc = authority.open_cert(data, unit, notes.ed25519_ok)
        authority.admit(doc, None, [])
    except authority.AuthorityError as exc:
        raise SettingsError(f"{where}: office_cert {cert}: {exc}") from None
    if list(doc["may"]) != ["records"]:
        raise SettingsError(f"{where}: office_cert {cert} grants {', '.join(doc['may'])}: the"
                            " records office's certificate carries the right 'records' alone"
                            " (bodycam unit certify --may records)")
    signer = cosign.KeyCosigner(f"bodycam-office-{doc['dock']}", load_key(Path(key)), data)
    if bytes(doc["key"]) != signer.public_key:
        raise SettingsError(f"{where}: office_cert {cert} certifies another key than {key}")
    return signer


class CentralArchive:
    """The central index, read and written as the records office's `Archive`."""

    def __init__(self, dsn: str, objects: Objects, signer: cosign.KeyCosigner | None = None,
                 unit_public: bytes | None = None) -> None:
        self.objects = objects
        self.signer = signer  # the records office's key: signs the central log's checkpoints
        self.unit_public = unit_public
        self.db = psycopg.connect(dsn, autocommit=True)
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK,))
            self.db.execute(SCHEMA)  # type: ignore[arg-type]
            index.append_only(self.db, APPEND_ONLY)
            self.db.execute("INSERT INTO central_meta(key, value) VALUES ('origin', %s)"
                            " ON CONFLICT (key) DO NOTHING",
                            (ORIGIN_PREFIX + uuid.uuid4().hex,))
        self._origin = str(self._one("SELECT value FROM central_meta WHERE key = 'origin'"))
        self._mirror: tuple[int, dict[str, list[tuple[str, int, dict[str, Any]]]]] | None = None
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._bytes: dict[tuple[str, int], bytes] = {}

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> CentralArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _one(self, sql: str, *args: object) -> Any:
        row = self.db.execute(sql, args).fetchone()  # type: ignore[arg-type]
        return None if row is None else row[0]

    @property
    def origin(self) -> str:
        return self._origin

    # -- the docks' entries ----------------------------------------------------------------------

    def _mirrored(self, kind: str) -> list[tuple[str, int, dict[str, Any]]]:
        """(origin, index, decoded entry) of the docks' entries of a kind, read again whenever
        a dock's log grew since."""
        size = int(self._one("SELECT coalesce(sum(size), 0) FROM logs"))
        if self._mirror is None or self._mirror[0] != size:
            found: dict[str, list[tuple[str, int, dict[str, Any]]]] = {
                k: [] for k in index.MIRRORED}
            for origin, idx, k, entry in self.db.execute(
                    "SELECT origin, idx, kind, entry FROM log_entries WHERE kind IN"  # type: ignore[arg-type]
                    f" ({index.MIRRORED_SQL}) ORDER BY origin, idx"):
                doc = cbor.decode(bytes(entry))
                if isinstance(doc, dict) and mirrored_problem(doc) is None:
                    found[k].append((str(origin), int(idx), doc))
            self._mirror = (size, found)
        return self._mirror[1][kind]

    def _entry(self, origin: str, idx: int) -> bytes:
        entry = self._one("SELECT entry FROM log_entries WHERE origin = %s AND idx = %s",
                          origin, idx)
        if entry is None:
            raise VaultError(f"the central holds no entry {idx} of {origin}")
        return bytes(entry)

    # -- the evidence ----------------------------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        out = []
        for device_id, key, origin, idx in self.db.execute(
                "SELECT device_id, public_key, origin, idx FROM devices ORDER BY device_id"):
            entry = cbor.decode(self._entry(origin, idx))
            out.append({**entry, "device_id": device_id, "public_key": bytes(key),
                        "origin": origin})
        return out

    def public_key(self, device_id: str) -> bytes | None:
        key = self._one("SELECT public_key FROM devices WHERE device_id = %s", device_id)
        return None if key is None else bytes(key)

    def records(self, device_id: str) -> list[dict[str, Any]]:
        if device_id in self._records:
            return self._records[device_id]
        rows = []
        for seq, record, digest, data_state, chain_break, entry in self.db.execute(
                "SELECT r.seq, r.record, r.record_sha256, r.data_state, r.chain_break, e.entry"
                " FROM records r JOIN log_entries e ON e.origin = r.origin AND e.idx = r.idx"
                " WHERE r.device_id = %s ORDER BY r.seq", (device_id,)):
            record = bytes(record)
            self._bytes[(device_id, int(seq))] = record
            fields = manifest.decode(cose.parse_sign1(record).payload)
            stored = cbor.decode(bytes(entry))
            rows.append({"device_id": device_id,
                         **schema.signed_columns(fields, bytes(digest)),
                         "data_state": data_state, "chain_break": chain_break,
                         "stored_at": stored.get("stored_at")})
        for row in rows:
            if isinstance(row["tracks"], str):
                row["tracks"] = json.loads(row["tracks"])
            if row["truncated"] is not None:
                row["truncated"] = bool(row["truncated"])
        self._records[device_id] = rows
        return rows

    def stored_record_hash(self, device_id: str, seq: int) -> bytes | None:
        digest = self._one("SELECT record_sha256 FROM records WHERE device_id = %s AND"
                           " seq = %s", device_id, seq)
        return None if digest is None else bytes(digest)

    def record_bytes(self, device_id: str, seq: int) -> bytes:
        if (device_id, seq) not in self._bytes:
            record = self._one("SELECT record FROM records WHERE device_id = %s AND seq = %s",
                               device_id, seq)
            if record is None:
                raise VaultError(f"the central holds no record {device_id}/{seq}")
            self._bytes[(device_id, seq)] = bytes(record)
        return self._bytes[(device_id, seq)]

    def records_between(self, device_id: str, from_us: int, to_us: int) -> list[int]:
        return [int(r["seq"]) for r in self.records(device_id)
                if r["t_end"] > from_us and r["t_start"] < to_us]

    def case_devices(self, case: str) -> list[str]:
        return [str(d) for (d,) in self.db.execute(
            "SELECT DISTINCT device_id FROM records WHERE case_no = %s ORDER BY device_id",
            (case,))]

    def events(self, *, device_id: str | None = None,
               case_no: str | None = None) -> list[dict[str, Any]]:
        devices = [device_id] if device_id is not None else (
            self.case_devices(case_no) if case_no is not None else
            [str(d["device_id"]) for d in self.devices()])
        out = []
        for d in devices:
            for row in self.records(d):
                if row["kind"] == manifest.KIND_SEGMENT:
                    continue
                seq = int(row["seq"])
                f = manifest.decode(cose.parse_sign1(self.record_bytes(d, seq)).payload)
                name, detail, phase = schema.event_columns(f)
                if case_no is not None and phase.get("case") != case_no:
                    continue
                out.append({"device_id": d, "seq": seq, "kind": row["kind"], "name": name,
                            "t": row["t_start"], "phase_row": phase.get("row"),
                            "case_no": phase.get("case"), "officer": phase.get("officer"),
                            "detail": json.loads(detail)})
        return sorted(out, key=lambda e: (e["t"], e["seq"]))

    def dockings(self, device_id: str | None = None) -> list[dict[str, Any]]:
        out = []
        for origin, _, doc in self._mirrored("docking"):
            if device_id is None or doc.get("device_id") == device_id:
                out.append({"id": doc.get("id"), "device_id": doc.get("device_id"),
                            "at": doc.get("at"), "report": json.loads(str(doc.get("report"))),
                            "origin": origin})
        return sorted(out, key=lambda d: str(d["at"]))

    def docks(self) -> list[dict[str, Any]]:
        own = [{"name": name, "public_key": bytes(key), "cert": None if cert is None else
                bytes(cert), "at": at} for name, key, cert, at in self.db.execute(
                    "SELECT name, public_key, cert, at FROM central_signers ORDER BY id")]
        return own + [{k: doc.get(k) for k in ("name", "public_key", "cert", "at")}
                      | {"origin": origin} for origin, _, doc in self._mirrored("dock")]

    def has_object(self, sha256: bytes) -> bool:
        """Whether the store holds a version of the object (a delete marker hides none)."""
        return self.objects.has_version(sha256)

    def copy_object(self, sha256: bytes, dest: Path) -> None:
        self.objects.fetch(sha256, dest)

    # -- the register ----------------------------------------------------------------------------

    def custody(self, *, what: str | None = None, subject: str | None = None,
                since_id: int = 0) -> list[dict[str, Any]]:
        """The central's register rows (id > since_id), then — unless `since_id` asks for rows
        after one of them — the docks' rows of the shared kinds in time order (a recorder
        issued at one dock is returned at another), each with its "origin", its "log" index
        there, and an id "<vault id>.<that index>". Of a dock whose log is flagged, the rows
        that would widen a case (evidence marks, hall footage only the dock attests) are left
        out until a person clears it; its classes and holds, which only restrict, count."""
        sql = "SELECT id, what, at, actor, subject, fields FROM register WHERE id > %s"
        args: list[object] = [since_id]
        if what is not None:
            sql, args = sql + " AND what = %s", [*args, what]
        if subject is not None:
            sql, args = sql + " AND subject = %s", [*args, subject]
        rows = [{"id": i, "what": w, "at": at, "actor": a, "subject": s,
                 "fields": json.loads(f)} for i, w, at, a, s, f in self.db.execute(
                     sql + " ORDER BY id", args)]  # type: ignore[arg-type]
        if since_id or (what is not None and what not in SHARED_KINDS):
            return rows
        theirs = []
        suspect = {str(o) for (o,) in self.db.execute(
            "SELECT origin FROM logs WHERE flagged IS NOT NULL")}
        for origin, idx, doc in self._mirrored("custody"):
            if doc.get("what") not in SHARED_KINDS or what not in (None, doc.get("what")) or (
                    subject not in (None, doc.get("subject"))):
                continue
            if origin in suspect and doc["what"] in WIDENING:
                continue  # a flagged dock's word adds nothing to a case until a person clears it
            theirs.append({"id": dock_row_id(origin, idx), "what": doc["what"],
                           "at": doc["at"], "actor": doc["actor"], "subject": doc["subject"],
                           "fields": json.loads(str(doc["fields"])), "origin": origin,
                           "log": idx})
        by_dock: dict[str, list[dict[str, Any]]] = {}
        for row in theirs:  # each dock's rows in its log's order, the docks merged by time
            by_dock.setdefault(str(row["origin"]), []).append(row)
        return rows + list(heapq.merge(*by_dock.values(), key=lambda r: str(r["at"])))

    def append_custody(self, what: str, actor: str, subject: str,
                       fields: dict[str, Any]) -> tuple[int, int]:
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        with self.transaction() as db:
            row = db.execute("INSERT INTO register(what, at, actor, subject, fields)"
                             " VALUES (%s, %s, %s, %s, %s) RETURNING id, what, at, actor,"
                             " subject, fields", (what, schema.now(), actor, subject, text)
                             ).fetchone()
            assert row is not None
            doc = dict(zip(("id", "what", "at", "actor", "subject", "fields"), row, strict=True))
            return int(row[0]), self._append(f"custody/{row[0]}",
                                             schema.log_entry("custody", doc))

    # -- the central's log -----------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        with self.db.transaction():
            self.db.execute("SELECT pg_advisory_xact_lock(%s)", (LOG_LOCK,))
            yield self.db

    def _append(self, ref: str, entry: bytes) -> int:
        with self.transaction() as db:
            idx = int(self._one("SELECT coalesce(max(idx) + 1, 0) FROM central_log"))
            kind = cbor.decode(entry).get("kind", "?")
            db.execute("INSERT INTO central_log(idx, kind, ref, entry, leaf) VALUES"
                       " (%s, %s, %s, %s, %s)", (idx, kind, ref, entry, log.leaf_hash(entry)))
        return idx

    def log_size(self) -> int:
        return int(self._one("SELECT coalesce(max(idx) + 1, 0) FROM central_log"))

    def log_index(self, ref: str) -> int | None:
        """The index of the entry for `ref` in the central's log. A dock's entry the central
        vouches for ("devices/D", "records/D/S", "custody/<vault id>.<index>") is copied
        from the mirror into the log the first time it is asked for."""
        held = self._one("SELECT idx FROM central_log WHERE ref = %s", ref)
        if held is not None:
            return int(held)
        where = self._source(ref)
        if where is None:
            return None
        with self.transaction():
            held = self._one("SELECT idx FROM central_log WHERE ref = %s", ref)
            return int(held) if held is not None else self._append(ref, self._entry(*where))

    def _source(self, ref: str) -> tuple[str, int] | None:
        """(origin, index) of the dock's entry a ref names, if the central holds it."""
        parts = ref.split("/")
        row = None
        if parts[0] == "devices" and len(parts) == 2:
            row = self.db.execute("SELECT origin, idx FROM devices WHERE device_id = %s",
                                  (parts[1],)).fetchone()
        elif parts[0] == "records" and len(parts) == 3 and parts[2].isdigit():
            row = self.db.execute("SELECT origin, idx FROM records WHERE device_id = %s AND"
                                  " seq = %s", (parts[1], int(parts[2]))).fetchone()
        elif parts[0] == "custody" and len(parts) == 2 and "." in parts[1]:
            vault_id, _, idx = parts[1].rpartition(".")
            if idx.isdigit():
                return notes.origin_of(vault_id), int(idx)
        return None if row is None else (str(row[0]), int(row[1]))

    def log_leaves(self) -> list[bytes]:
        leaves: list[bytes] = []
        for idx, entry, leaf in self.db.execute(
                "SELECT idx, entry, leaf FROM central_log ORDER BY idx"):
            h = log.leaf_hash(bytes(entry))
            if idx != len(leaves) or h != bytes(leaf):
                raise VaultError(f"the central's log is broken at entry {idx}")
            leaves.append(h)
        return leaves

    def log_entry_bytes(self, index: int) -> bytes:
        entry = self._one("SELECT entry FROM central_log WHERE idx = %s", index)
        if entry is None:
            raise VaultError(f"the central's log holds no entry {index}")
        return bytes(entry)

    def checkpoint(self, signer: notes.Signer) -> bytes:
        """Sign the central log's size and root, and keep the note in the store, locked;
        refused when the log no longer extends a checkpoint signed before, by the database's
        record or by the store's (someone with the database alone cannot rewrite the log and
        its checkpoints: the store still holds them)."""
        name, public_key, cert = notes.signer_identity(signer)
        with self.transaction() as db:
            known = db.execute("SELECT 1 FROM central_signers WHERE name = %s AND"
                               " public_key = %s AND cert IS NOT DISTINCT FROM %s",
                               (name, public_key, cert)).fetchone()
            if known is None:
                row = db.execute("INSERT INTO central_signers(name, public_key, cert, at)"
                                 " VALUES (%s, %s, %s, %s) RETURNING id, name, public_key,"
                                 " cert, at", (name, public_key, cert, schema.now())).fetchone()
                assert row is not None
                doc = dict(zip(("id", "name", "public_key", "cert", "at"), row, strict=True))
                self._append(f"docks/{row[0]}", schema.log_entry("docks", doc))
            leaves = self.log_leaves()
            before = [(int(s), bytes(r)) for s, r in db.execute(
                "SELECT size, root FROM central_checkpoints ORDER BY id")]
            before += self._anchored(name, public_key)
            roots = log.roots_at(leaves, [s for s, _ in before] + [len(leaves)])
            for size, root in before:
                if size > len(leaves) or roots[size] != root:
                    raise VaultError(f"the central's log no longer extends its checkpoint of"
                                     f" {size} entries: refusing to sign")
            note = notes.sign(self.origin, len(leaves), roots[len(leaves)], signer)
            db.execute("INSERT INTO central_checkpoints(size, root, note) VALUES (%s, %s, %s)",
                       (len(leaves), roots[len(leaves)], note.decode()))
            # before COMMIT: a checkpoint exists only once the store keeps it, locked
            self.objects.put_locked(f"{self._anchor_prefix()}{len(leaves):012d}.note", note)
        return note

    def _anchor_prefix(self) -> str:
        return f"checkpoints/{self.origin.removeprefix(ORIGIN_PREFIX)}/"

    def _anchored(self, name: str, public_key: bytes) -> list[tuple[int, bytes]]:
        """(size, root) of every checkpoint of this log the office signed and the store keeps
        locked: what someone with the database alone cannot take back."""
        out = []
        for data in self.objects.every_version(self._anchor_prefix()):
            try:
                cp = notes.parse(data)
            except notes.CheckpointError:
                continue
            if cp.origin == self.origin and notes.verify(cp.text, cp.signatures, name,
                                                         public_key):
                out.append((cp.size, cp.root))
        return out


def mirrored_problem(doc: dict[str, Any]) -> str | None:
    """What is wrong with a dock's entry the records office at the centre reads (a register
    row, a docking report, a dock key); None for the other kinds, which the service checks
    where it takes them. The service refuses (and flags) an entry with a problem; reading
    skips one taken before this check existed."""
    kind = doc.get("kind")
    if kind == "custody":
        return row_problem(doc)
    if kind == "docking":
        try:
            report = json.loads(str(doc.get("report")))
        except ValueError:
            return "a docking entry whose report is not JSON"
        if not isinstance(doc.get("at"), str) or not isinstance(doc.get("device_id"),
                                                                str | None):
            return "a docking entry without its time and recorder"
        return docking_problem(report)
    if kind == "dock" and not (isinstance(doc.get("name"), str)
                               and isinstance(doc.get("public_key"), bytes)
                               and len(doc["public_key"]) == 32
                               and isinstance(doc.get("cert"), bytes | None)):
        return "a dock entry without its name, key and certificate"
    return None


def one_line(exc: BaseException) -> str:
    """A driver's message (libpq's span lines) as one line."""
    return " ".join(str(exc).split())


def dock_row_id(origin: str, idx: int) -> str:
    """How the central names a dock's register row: "<vault id>.<index in the dock's log>"."""
    return f"{origin.removeprefix(notes.ORIGIN_PREFIX)}.{idx}"
