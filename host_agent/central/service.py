"""The central service: takes what certified docks forward, trusts none of it, keeps it once.

For each batch (host_agent/central/wire.py), in one PostgreSQL transaction holding the dock
log's row lock:
1. the request is signed by a dock key the unit certified and has not revoked;
2. the log is not flagged (a flagged log is refused until a person clears it);
3. entries the central already holds must be byte-identical (else the dock's log forked:
   flagged); new entries must follow on at the next index;
4. each new entry is checked by kind: an enrolment gives a recorder's key (the first certified
   dock to enrol a device decides; another key for it is refused and flagged); a record must
   be the signed record the entry names, signed by that key, the next of its recorder's chain
   (or a break the dock recorded), and its segment must be in the object store with that
   SHA-256 and size, locked;
5. the central follows the log's root leaf by leaf (log.Frontier); the dock's checkpoint must
   be for exactly the entries it holds now, with that root, signed by the dock's key — a
   checkpoint for fewer entries than the central holds is a log that shrank (a vault rolled
   back or cut): flagged;
6. the central cosigns the checkpoint (C2SP tlog-cosignature) and commits.
Whatever is refused is registered in `refusals`, in its own transaction.

Before a batch, the dock asks for uploads of the segments it is about to name (`uploads`):
the central hands it a presigned PUT for each (objects.Objects.upload: the store checks the
bytes against the SHA-256), registers it in `uploads`, and for an object it handed out before
looks in the store first, so a dock that crashed after putting it puts it once. A record's
object is then checked with one HEAD (objects.Objects.verify), not read back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from host_agent.central import cosign, index, wire
from host_agent.central.archive import mirrored_problem
from host_agent.central.objects import Objects
from host_agent.vault import checkpoint as notes
from host_agent.vault import evidence, log
from host_agent.vault.store import DEVICE_ID
from protocol import authority, cbor, manifest

log_ = logging.getLogger("bodycam.central")


class Refused(Exception):
    """A batch the central does not take. `flag`: also stop this log until a person looks."""

    def __init__(self, reason: str, flag: bool = False) -> None:
        super().__init__(reason)
        self.flag = flag


class RebindError(ValueError):
    """A re-binding the central does not make; the message says why."""


@dataclass
class Central:
    dsn: str
    objects: Objects
    unit_key: bytes
    cosigner: cosign.Cosigner
    revoked: set[bytes] = field(default_factory=set)
    _local: threading.local = field(default_factory=threading.local)

    def db(self) -> psycopg.Connection[Any]:
        conn = getattr(self._local, "db", None)
        if conn is None or conn.closed:
            conn = self._local.db = index.connect(self.dsn)
        return conn

    # -- requests --------------------------------------------------------------------------------

    def handle(self, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, answer) for a request body."""
        try:
            doc, cert = wire.open_request(body, self.unit_key, self.revoked,
                                          int(time.time() * 1e6))
        except wire.WireError as exc:
            self._refusal(None, None, str(exc))
            return 403, wire.answer({"error": str(exc), "flagged": None})
        origin, dock_id = doc["origin"], cert["dock"]
        try:
            if doc.get("type") == "state":
                return 200, wire.answer(self.state(origin))
            if doc.get("type") == "forward":
                return 200, wire.answer(self.forward(doc, cert))
            if doc.get("type") == "uploads":
                return 200, wire.answer(self.uploads(doc, cert))
            raise Refused(f"unknown request type {doc.get('type')!r}")
        except Refused as exc:
            db = self.db()
            db.rollback()
            if exc.flag:
                self._flag(origin, dock_id, bytes(cert["key"]), str(exc))
            self._refusal(origin, dock_id, str(exc))
            log_.warning("%s (%s): refused: %s", origin, dock_id, exc)
            return 409, wire.answer({"error": str(exc), **self.state(origin)})
        except psycopg.Error as exc:
            self.db().rollback()
            log_.error("%s: database: %s", origin, exc)
            return 503, wire.answer({"error": f"central database: {exc}", "flagged": None})
        except Exception as exc:  # noqa: BLE001 - a store outage: nothing taken, say so
            self.db().rollback()
            reason = f"{type(exc).__name__}: {exc}"
            log_.error("%s: %s", origin, reason)
            self._refusal(origin, dock_id, f"not taken now: {reason}")
            return 503, wire.answer({"error": f"central: {reason}", "flagged": None})

    def state(self, origin: str) -> dict[str, Any]:
        row = self.db().execute("SELECT size, flagged FROM logs WHERE origin = %s",
                                (origin,)).fetchone()
        self.db().commit()
        return {"next": 0 if row is None else int(row[0]),
                "flagged": None if row is None else row[1]}

    def _refusal(self, origin: str | None, dock_id: str | None, reason: str) -> None:
        db = self.db()
        db.rollback()
        db.execute("INSERT INTO refusals(origin, dock_id, reason) VALUES (%s, %s, %s)",
                   (origin, dock_id, reason))
        db.commit()

    def _flag(self, origin: str, dock_id: str, key: bytes, reason: str) -> None:
        """Stop the log (only its own dock's requests can: the row is bound to its key)."""
        db = self.db()
        db.execute("INSERT INTO logs(origin, dock_id, dock_key, flagged) VALUES (%s, %s, %s, %s)"
                   " ON CONFLICT (origin) DO UPDATE SET flagged = EXCLUDED.flagged,"
                   " updated = now() WHERE logs.dock_key = EXCLUDED.dock_key",
                   (origin, dock_id, key, reason))
        db.commit()

    def clear(self, origin: str, by: str) -> None:
        """A person looked at a flagged log and lets it forward again (registered)."""
        db = self.db()
        db.execute("UPDATE logs SET flagged = NULL, updated = now() WHERE origin = %s",
                   (origin,))
        db.execute("INSERT INTO refusals(origin, dock_id, reason) VALUES (%s, %s, %s)",
                   (origin, None, f"flag cleared by {by}"))
        db.commit()

    def rebind(self, origin: str, cert: bytes, by: str, reason: str) -> dict[str, Any]:
        """A person binds the log `origin` to the dock key `cert` certifies (its vault moved to
        a new dock PC): from then on that key forwards it and the old one is refused. The
        certificate is checked as a request's is (the unit's, valid now, not revoked). A flag
        stays: only `clear` lifts it. The new binding and its row in `rebinds` (who, why,
        both docks, the certificate) commit together; what was done, for the person."""
        if not by.strip() or not reason.strip():
            raise RebindError("a rebind names who makes it and why")
        new = self._admitted(cert)
        key, db = bytes(new["key"]), self.db()
        db.rollback()
        try:
            row = db.execute("SELECT dock_id, dock_key, flagged FROM logs WHERE origin = %s"
                             " FOR UPDATE", (origin,)).fetchone()
            if row is None:
                raise RebindError(f"the central holds no log {origin!r}")
            old_id, old_key, flagged = str(row[0]), bytes(row[1]), row[2]
            if old_key == key:
                raise RebindError(f"log {origin} is already bound to that key (dock {old_id}):"
                                  " nothing to do")
            db.execute("UPDATE logs SET dock_id = %s, dock_key = %s, updated = now()"
                       " WHERE origin = %s", (new["dock"], key, origin))
            at = db.execute(
                "INSERT INTO rebinds(origin, old_dock_id, old_dock_key, new_dock_id,"
                " new_dock_key, cert, by_name, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING at", (origin, old_id, old_key, new["dock"], key, cert, by, reason)
            ).fetchone()[0]  # type: ignore[index]
            db.commit()
        except BaseException:
            db.rollback()
            raise
        return {"origin": origin, "at": at.isoformat(), "by": by, "reason": reason,
                "old": self._dock(old_id, old_key), "new": self._dock(new["dock"], key),
                "flagged": flagged}

    def _admitted(self, cert: bytes) -> dict[str, Any]:
        """The payload of `cert` if the central would take a request under it now."""
        try:
            return wire.admit_cert(cert, self.unit_key, self.revoked, int(time.time() * 1e6))
        except wire.WireError as exc:
            raise RebindError(str(exc)) from None

    @staticmethod
    def _dock(dock_id: str, key: bytes) -> dict[str, str]:
        """A dock as a rebind shows it: its id, its key and the key id a revocation names."""
        return {"dock": dock_id, "key": key.hex(), "key_id": authority.key_id(key).hex()}

    # -- uploads -------------------------------------------------------------------------------

    def uploads(self, doc: dict[str, Any], cert: dict[str, Any]) -> dict[str, Any]:
        """A presigned PUT for each object asked for, or "held" for one already in the store
        (an upload of it was handed out before and is there, tagged, of that size)."""
        db = self.db()
        origin, key = doc["origin"], bytes(cert["key"])
        asked = doc.get("objects")
        if not isinstance(asked, list) or len(asked) > wire.MAX_UPLOADS:
            raise Refused(f"uploads name a list of at most {wire.MAX_UPLOADS} objects")
        wanted: list[tuple[bytes, int, bool]] = []
        for o in asked:
            sha, size = (o.get("sha256"), o.get("size")) if isinstance(o, dict) else (None, None)
            if not isinstance(sha, bytes) or len(sha) != 32 or not isinstance(size, int) or \
                    not 0 <= size <= wire.MAX_OBJECT:
                raise Refused("an upload names a SHA-256 and a size (at most"
                              f" {wire.MAX_OBJECT} bytes)")
            wanted.append((sha, size, bool(o.get("hold"))))
        row = db.execute("SELECT flagged, dock_key FROM logs WHERE origin = %s",
                         (origin,)).fetchone()
        if row is not None and bytes(row[1]) != key:
            raise Refused(f"log {origin} is another dock's: {cert['dock']} may not forward it")
        if row is not None and row[0]:
            raise Refused(f"log {origin} is flagged ({row[0]}); a person must clear it")
        before = {bytes(r[0]) for r in db.execute(
            "SELECT object_sha256 FROM uploads WHERE object_sha256 = ANY(%s)",
            ([sha for sha, _, _ in wanted],))}
        out: list[dict[str, Any]] = []
        for sha, size, hold in wanted:
            if sha in before and self.objects.present(sha, size, hold=hold):
                out.append({"sha256": sha, "held": True})
            else:
                out.append({"sha256": sha, **self.objects.upload(sha, size, hold=hold)})
        new = [(sha, size) for sha, size, _ in wanted if sha not in before]
        if new:
            db.execute("INSERT INTO uploads(object_sha256, size, dock_id) SELECT s, n, %s FROM"
                       " unnest(%s::bytea[], %s::bigint[]) AS u(s, n)"
                       " ON CONFLICT (object_sha256) DO NOTHING",
                       (cert["dock"], [s for s, _ in new], [n for _, n in new]))
        db.commit()
        return {"uploads": out}

    # -- a batch ---------------------------------------------------------------------------------

    def forward(self, doc: dict[str, Any], cert: dict[str, Any]) -> dict[str, Any]:
        db = self.db()
        origin, dock_id, key = doc["origin"], cert["dock"], bytes(cert["key"])
        db.execute("INSERT INTO logs(origin, dock_id, dock_key) VALUES (%s, %s, %s)"
                   " ON CONFLICT (origin) DO NOTHING", (origin, dock_id, key))
        size, nodes, flagged, owner = db.execute(
            "SELECT size, nodes, flagged, dock_key FROM logs WHERE origin = %s FOR UPDATE",
            (origin,)).fetchone()  # type: ignore[misc]
        if bytes(owner) != key:
            raise Refused(f"log {origin} is another dock's: {dock_id} may not forward it (a"
                          " vault moved to a new dock PC is re-bound by a person)")
        if flagged:
            raise Refused(f"log {origin} is flagged ({flagged}); a person must clear it")
        frontier = log.Frontier.restore(int(size), [bytes(n) for n in nodes])
        start, entries = doc.get("from"), doc.get("entries")
        if not isinstance(start, int) or not isinstance(entries, list) or start < 0:
            raise Refused("a forward names where its entries start and carries a list")
        if start > frontier.size:
            raise Refused(f"entries from {start}, but the central holds {frontier.size}: a gap")
        stored = duplicates = 0
        for i, item in enumerate(entries):
            idx = start + i
            entry = item.get("entry") if isinstance(item, dict) else None
            if not isinstance(entry, bytes):
                raise Refused(f"entry {idx} carries no bytes")
            leaf = log.leaf_hash(entry)
            if idx < frontier.size:
                held = db.execute("SELECT leaf FROM log_entries WHERE origin = %s AND idx = %s",
                                  (origin, idx)).fetchone()
                if held is None or bytes(held[0]) != leaf:
                    raise Refused(f"log {origin} forked: entry {idx} is not the one the central"
                                  " holds", flag=True)
                duplicates += 1
                continue
            stored += self._take(db, origin, idx, entry, item)
            db.execute("INSERT INTO log_entries(origin, idx, kind, leaf, entry)"
                       " VALUES (%s, %s, %s, %s, %s)",
                       (origin, idx, _kind(entry), leaf, entry))
            frontier.append(leaf)
        cosigned = self._checkpoint(doc.get("checkpoint"), origin, key, frontier)
        db.execute("UPDATE logs SET size = %s, nodes = %s, root = %s, cosigned = %s,"
                   " updated = now() WHERE origin = %s",
                   (frontier.size, frontier.nodes, frontier.root(), cosigned.decode(), origin))
        db.commit()
        return {"next": frontier.size, "flagged": None, "cosigned": cosigned,
                "stored": stored, "duplicates": duplicates}

    def _checkpoint(self, note: object, origin: str, key: bytes,
                    frontier: log.Frontier) -> bytes:
        if not isinstance(note, bytes):
            raise Refused("a forward carries the dock's checkpoint")
        try:
            cp = notes.parse(note)
        except notes.CheckpointError as exc:
            raise Refused(f"not a checkpoint: {exc}") from None
        if cp.origin != origin:
            raise Refused(f"a checkpoint of {cp.origin}, not of {origin}")
        if not any(notes.key_hash(s.name, key) == s.key_hash
                   and notes.verify(cp.text, cp.signatures, s.name, key)
                   for s in cp.signatures):
            raise Refused("the checkpoint is not signed by the dock's certified key")
        if cp.size < frontier.size:
            raise Refused(f"log {origin} shrank: its checkpoint covers {cp.size} entries, the"
                          f" central holds {frontier.size} (a vault rolled back or cut)",
                          flag=True)
        if cp.size > frontier.size:
            raise Refused(f"the checkpoint covers {cp.size} entries, the batch ends at"
                          f" {frontier.size}")
        if cp.root != frontier.root():
            raise Refused(f"log {origin}: the checkpoint's root is not that of the entries"
                          " the central holds (the log was rewritten)", flag=True)
        return cosign.cosign(note, self.cosigner)

    def _take(self, db: psycopg.Connection[Any], origin: str, idx: int, entry: bytes,
              item: dict[str, Any]) -> int:
        """Check one new entry by its kind and keep what it stands for; 1 if a record."""
        try:
            doc = cbor.decode(entry)
        except cbor.CBORError as exc:
            raise Refused(f"entry {idx} is not CBOR: {exc}") from None
        if not isinstance(doc, dict):
            raise Refused(f"entry {idx} is not a map")
        kind = doc.get("kind")
        problem = mirrored_problem(doc)
        if problem:
            raise Refused(f"entry {idx}: {problem}", flag=True)
        if kind == "custody" and doc.get("what") == "hall":  # its footage is evidence too
            f = json.loads(str(doc["fields"]))
            wrong = self.objects.verify(bytes.fromhex(f["object"]), int(f["size"]))
            if wrong:
                raise Refused(f"entry {idx} (hall footage): {wrong}")
        if kind == "enrolment":
            self._enrol(db, origin, idx, doc)
        elif kind == "record":
            self._record(db, origin, idx, doc, item.get("record"))
            return 1
        return 0

    def _enrol(self, db: psycopg.Connection[Any], origin: str, idx: int,
               doc: dict[str, Any]) -> None:
        device_id, key = doc.get("device_id"), doc.get("public_key")
        if not isinstance(device_id, str) or not DEVICE_ID.fullmatch(device_id) or not (
                isinstance(key, bytes) and len(key) == 32):
            raise Refused(f"entry {idx}: an enrolment without a device id and key", flag=True)
        held = db.execute("SELECT public_key FROM devices WHERE device_id = %s",
                          (device_id,)).fetchone()
        if held is not None:
            if bytes(held[0]) != key:
                raise Refused(f"entry {idx} enrols {device_id} with another key than the one"
                              " the central holds", flag=True)
            return
        other = db.execute("SELECT device_id FROM devices WHERE public_key = %s",
                           (key,)).fetchone()
        if other is not None:
            raise Refused(f"entry {idx} enrols the key of {other[0]} as {device_id}", flag=True)
        db.execute("INSERT INTO devices(device_id, public_key, origin, idx)"
                   " VALUES (%s, %s, %s, %s)", (device_id, key, origin, idx))

    def _record(self, db: psycopg.Connection[Any], origin: str, idx: int,
                doc: dict[str, Any], record: object) -> None:
        device_id, seq = doc.get("device_id"), doc.get("seq")
        what = f"entry {idx} (record {seq} of {device_id})"
        if not isinstance(record, bytes) or hashlib.sha256(record).digest() != doc.get(
                "record_sha256"):
            raise Refused(f"{what}: the signed record sent is not the one the entry names")
        row = db.execute("SELECT public_key FROM devices WHERE device_id = %s",
                         (device_id,)).fetchone()
        if row is None:
            raise Refused(f"{what}: the central holds no enrolment of {device_id}")
        try:
            fields = evidence.open_record(record, bytes(row[0]), str(device_id))
        except evidence.EvidenceError as exc:
            raise Refused(f"{what}: {exc}", flag=True) from None
        if fields["seq"] != seq:
            raise Refused(f"{what}: the record is record {fields['seq']}", flag=True)
        held = db.execute("SELECT record_sha256 FROM records WHERE device_id = %s AND seq = %s",
                          (device_id, seq)).fetchone()
        if held is not None:
            if bytes(held[0]) != doc["record_sha256"]:
                raise Refused(f"{what}: the central holds another record {seq} of"
                              f" {device_id}", flag=True)
            return  # forwarded before by another dock's log
        before = db.execute("SELECT record_sha256 FROM records WHERE device_id = %s AND"
                            " seq = %s", (device_id, seq - 1)).fetchone()
        prev = manifest.GENESIS if seq == 1 else (bytes(before[0]) if before else None)
        if doc.get("chain_break") is None and prev is not None and fields["prev"] != prev:
            raise Refused(f"{what}: does not continue the chain the central holds", flag=True)
        data_state = doc.get("data_state")
        phase = fields.get("phase") or {}
        if fields["kind"] == manifest.KIND_SEGMENT and data_state == "stored":
            wrong = self.objects.verify(fields["sha256"], fields["size"],
                                        hold=bool(phase.get("case")))
            if wrong:
                raise Refused(f"{what}: {wrong}")
        db.execute(
            "INSERT INTO records(device_id, seq, kind, record, record_sha256, prev, object_sha256,"
            " size, data_state, chain_break, case_no, origin, idx) VALUES (%s, %s, %s, %s, %s,"
            " %s, %s, %s, %s, %s, %s, %s, %s)",
            (device_id, seq, fields["kind"], record, doc["record_sha256"], fields["prev"],
             fields.get("sha256"), fields.get("size"), data_state, doc.get("chain_break"),
             phase.get("case"), origin, idx))


def _kind(entry: bytes) -> str:
    try:
        doc = cbor.decode(entry)
    except cbor.CBORError:
        return "?"
    return str(doc.get("kind", "?")) if isinstance(doc, dict) else "?"
