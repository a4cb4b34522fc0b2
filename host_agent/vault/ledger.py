"""The vault's log: every entry the vault makes, in an append-only Merkle log (RFC 6962
hashing, host_agent/vault/log.py), the signed facts docks and recorders hand in, and the
checkpoints the dock signs over it (C2SP signed notes, host_agent/vault/checkpoint.py).

`Ledger` is the part of `Vault` that keeps them: every row the vault appends gets its log entry
in the same transaction (`_log_row`); `record_fact` takes a recorder's head statement or a
dock's release receipt; `checkpoint` signs the log's size and root. `Vault` derives from it
and provides the connection, the root and the enrolled keys.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from host_agent.vault import checkpoint as notes
from host_agent.vault import log, schema
from host_agent.vault.errors import VaultError
from host_agent.vault.files import fsync_dir, write_durable
from host_agent.vault.schema import now, row_dict
from protocol import authority, cbor, cose

CHECKPOINT_FILE = "checkpoint"


class Ledger:
    """The log, facts and checkpoints of a vault (see the module docstring)."""

    root: Path
    _tmp: Path

    # -- provided by Vault -----------------------------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        raise NotImplementedError

    @property
    def origin(self) -> str:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def public_key(self, device_id: str) -> bytes | None:
        raise NotImplementedError

    # -- appending -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The caller's transaction if one is open on this connection, else one of our own."""
        if self.db.in_transaction:
            yield self.db
        else:
            with self.transaction() as db:
                yield db

    def _log_row(self, table: str, where: str, params: tuple[object, ...]) -> int:
        """Append the log entry of the row of `table` just inserted (read back as stored, so
        the entry is what `verify` will rebuild); return its index. Inside a transaction."""
        cur = self.db.execute(f"SELECT * FROM {table} WHERE {where}", params)
        row = cur.fetchone()
        if row is None:
            raise VaultError(f"{table}: the row just written is not there")
        return append_log(self.db, table, row_dict(cur, row))

    def append_custody(self, what: str, actor: str, subject: str,
                       fields: dict[str, Any]) -> tuple[int, int]:
        """Append a row of the custody register (host_agent/custody/) and its log entry;
        return (row id, log index). Inside the caller's transaction or one of its own."""
        try:
            text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise VaultError(f"a register entry's fields must be JSON: {exc}") from exc
        with self._writing() as db:
            cur = db.execute("INSERT INTO custody(what, at, actor, subject, fields)"
                             " VALUES (?, ?, ?, ?, ?)", (what, now(), actor, subject, text))
            assert cur.lastrowid is not None
            index = self._log_row("custody", "id = ?", (cur.lastrowid,))
        return cur.lastrowid, index

    def custody(self, *, what: str | None = None, subject: str | None = None,
                since_id: int = 0) -> list[dict[str, Any]]:
        """Register rows, oldest first, fields decoded; filtered by kind and/or subject."""
        sql = "SELECT * FROM custody WHERE id > ?"
        args: list[object] = [since_id]
        if what is not None:
            sql += " AND what = ?"
            args.append(what)
        if subject is not None:
            sql += " AND subject = ?"
            args.append(subject)
        cur = self.db.execute(sql + " ORDER BY id", args)
        rows = []
        for values in cur.fetchall():
            row: dict[str, Any] = row_dict(cur, values)
            row["fields"] = json.loads(str(row["fields"]))
            rows.append(row)
        return rows

    def record_fact(self, kind: str, fields: dict[str, Any]) -> int:
        """Append a signed fact and its log entry; return the entry's log index.

        The signed statement (COSE_Sign1 bytes) is `fields["statement"]`, or `fields[kind]`.
        kind "head": a recorder's head statement (protocol.authority.head), which must verify
        with the enrolled key of the device it names. kind "receipt": a dock's release receipt
        (protocol.authority.receipt) whose `log` index must be the log entry of the record it
        names (Outcome.log_index), and whose signature must verify if its key id is that of a
        dock key the vault recorded (`checkpoint`). Other entries of `fields` (str keys,
        CBOR-encodable values) are kept with it; "device"/"device_id", "seq" and "record", if
        given, must say what the statement says. Works inside the caller's transaction, or in
        one of its own; VaultError says what is wrong with a fact that does not fit.
        """
        if kind not in schema.FACT_KINDS:
            raise VaultError(f"fact kind {kind!r} is not one of {', '.join(schema.FACT_KINDS)}")
        if not isinstance(fields, dict) or not all(isinstance(k, str) for k in fields):
            raise VaultError("a fact's fields are a dict with text keys")
        try:
            blob = bytes(cbor.encode(fields))
        except cbor.CBORError as exc:
            raise VaultError(f"a fact's fields must be CBOR-encodable: {exc}") from exc
        with self._writing() as db:
            device_id = check_fact(kind, fields, self.public_key, self.log_entry,
                                   self._dock_key)
            cur = db.execute("INSERT INTO facts(kind, device_id, at, fields) VALUES (?, ?, ?, ?)",
                             (kind, device_id, now(), blob))
            return self._log_row("facts", "id = ?", (cur.lastrowid,))

    def facts(self, kind: str | None = None) -> list[dict[str, object]]:
        """The facts handed in, oldest first, with their fields decoded."""
        sql = "SELECT * FROM facts"
        args: tuple[str, ...] = ()
        if kind is not None:
            sql, args = sql + " WHERE kind = ?", (kind,)
        cur = self.db.execute(sql + " ORDER BY id", args)
        rows = []
        for row in cur.fetchall():
            d = row_dict(cur, row)
            blob = d["fields"]
            d["fields"] = cbor.decode(bytes(blob)) if isinstance(blob, bytes) else None
            rows.append(d)
        return rows

    # -- the log -------------------------------------------------------------------------------

    def log_size(self) -> int:
        """How many entries the log holds (the tree size)."""
        row = self.db.execute("SELECT coalesce(max(idx) + 1, 0) FROM log").fetchone()
        return int(row[0])

    def log_index(self, ref: str) -> int | None:
        """The index of the entry committing to a row ("records/<device>/<seq>", …)."""
        row = self.db.execute("SELECT idx FROM log WHERE ref = ?", (ref,)).fetchone()
        return None if row is None else int(row[0])

    def log_entry(self, index: int) -> dict[str, Any] | None:
        """Entry `index` of the log, decoded; None if there is none."""
        row = self.db.execute("SELECT entry FROM log WHERE idx = ?", (index,)).fetchone()
        if row is None:
            return None
        try:
            entry = cbor.decode(bytes(row[0]))
        except cbor.CBORError as exc:
            raise VaultError(f"log entry {index} is not CBOR; run verify") from exc
        return entry if isinstance(entry, dict) else None

    def log_entry_bytes(self, index: int) -> bytes:
        """Entry `index` of the log as stored (CBOR)."""
        row = self.db.execute("SELECT entry FROM log WHERE idx = ?", (index,)).fetchone()
        if row is None:
            raise VaultError(f"the log holds no entry {index}; run bodycam vault verify")
        return bytes(row[0])

    def log_leaves(self) -> list[bytes]:
        """The leaf hashes of the whole log, each recomputed from its entry; VaultError if an
        entry does not hash to its stored leaf or an index is missing (run verify)."""
        leaves: list[bytes] = []
        for idx, entry, leaf in self.db.execute("SELECT idx, entry, leaf FROM log ORDER BY idx"):
            if idx != len(leaves):
                raise VaultError(f"log entry {len(leaves)} is missing (the log goes on at {idx});"
                                 " run bodycam vault verify")
            h = log.leaf_hash(bytes(entry))
            if h != bytes(leaf):
                raise VaultError(f"log entry {idx} does not hash to its leaf;"
                                 " run bodycam vault verify")
            leaves.append(h)
        return leaves

    def log_root(self, size: int | None = None) -> bytes:
        """The tree head of the first `size` entries (default: all)."""
        leaves = self.log_leaves()
        n = len(leaves) if size is None else size
        if not 0 <= n <= len(leaves):
            raise VaultError(f"the log holds {len(leaves)} entries, not {n}")
        return log.root(leaves[:n])

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The proof that entry `index` is in the tree of the first `size` entries."""
        try:
            return log.inclusion_proof(self.log_leaves(), index, size)
        except ValueError as exc:
            raise VaultError(str(exc)) from exc

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The proof that the tree of `old_size` entries is a prefix of that of `new_size`."""
        try:
            return log.consistency_proof(self.log_leaves(), old_size, new_size)
        except ValueError as exc:
            raise VaultError(str(exc)) from exc

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint(self, signer: notes.Signer) -> bytes:
        """Sign the log's current size and root as a C2SP checkpoint note; return the note.

        The note is kept in the checkpoints table and, durably, in VAULT/checkpoint; copies
        kept elsewhere are what `verify --checkpoint/--witness` checks the vault against. The
        signer's key (and its unit certificate, `signer.cert`, if it has one) is recorded in
        the docks table and the log first, so the checkpoint covers it. Refused (VaultError)
        inside a transaction, when the log does not hash to its own leaves, and when the log no
        longer extends every checkpoint the vault signed before (a log must never sign a
        checkpoint inconsistent with an earlier one: run `bodycam vault verify`).
        """
        name, public_key, cert = notes.signer_identity(signer)
        if cert is not None and cert_key(cert) != public_key:
            raise VaultError(f"the certificate of {name} is for another key")
        if self.db.in_transaction:
            raise VaultError("sign a checkpoint outside any transaction: it must cover only"
                             " committed entries")
        try:
            return self._checkpoint(signer, name, public_key, cert)
        except sqlite3.Error as exc:
            raise VaultError(f"cannot sign a checkpoint: {exc}; run bodycam vault verify"
                             ) from exc

    def _checkpoint(self, signer: notes.Signer, name: str, public_key: bytes,
                    cert: bytes | None) -> bytes:
        with self.transaction() as db:
            known = db.execute("SELECT 1 FROM docks WHERE name = ? AND public_key = ? AND"
                               " cert IS ?", (name, public_key, cert)).fetchone()
            if known is None:
                cur = db.execute("INSERT INTO docks(name, public_key, cert, at)"
                                 " VALUES (?, ?, ?, ?)", (name, public_key, cert, now()))
                self._log_row("docks", "id = ?", (cur.lastrowid,))
        with self.transaction() as db:
            leaves = self.log_leaves()
            size = len(leaves)
            before = self._signed_before()
            roots = log.roots_at(leaves, [s for _, s, _ in before] + [size])
            for what, old_size, old_root in before:
                if old_size > size:
                    raise VaultError(
                        f"{what} covers {old_size} log entries but the log holds {size}: the"
                        " vault was cut or rolled back; refusing to sign (run bodycam vault"
                        " verify)")
                if roots[old_size] != old_root:
                    raise VaultError(
                        f"the first {old_size} log entries no longer hash to the root {what}"
                        " signed: the log was rewritten; refusing to sign (run bodycam vault"
                        " verify)")
            root = roots[size]
            note = notes.sign(self.origin, size, root, signer)
            db.execute("INSERT INTO checkpoints(size, root, key_name, note, at)"
                       " VALUES (?, ?, ?, ?, ?)", (size, root, name, note.decode(), now()))
            # before COMMIT, under the write lock: the file never goes back to an older note
            write_durable(self._tmp, self.root / CHECKPOINT_FILE, note)
            fsync_dir(self.root)
        return note

    def _signed_before(self) -> list[tuple[str, int, bytes]]:
        """(what, size, root) of every checkpoint this vault signed: the table's and the file's."""
        out = []
        for cid, text in self.db.execute("SELECT id, note FROM checkpoints ORDER BY id"):
            out.append((f"checkpoint #{cid}", *self._own_note(str(text).encode(),
                                                              f"checkpoint #{cid}")))
        try:
            data = (self.root / CHECKPOINT_FILE).read_bytes()
        except FileNotFoundError:
            return out
        except OSError as exc:
            raise VaultError(f"cannot read {CHECKPOINT_FILE}: {exc.strerror}") from exc
        out.append((f"the {CHECKPOINT_FILE} file", *self._own_note(data, CHECKPOINT_FILE)))
        return out

    def _own_note(self, data: bytes, what: str) -> tuple[int, bytes]:
        try:
            cp = notes.parse(data)
        except notes.CheckpointError as exc:
            raise VaultError(f"{what} is not a checkpoint note ({exc}); run bodycam vault"
                             " verify") from exc
        if cp.origin != self.origin:
            raise VaultError(f"{what} is a checkpoint of another vault ({cp.origin})")
        return cp.size, cp.root

    def checkpoints(self) -> list[dict[str, object]]:
        """Every checkpoint this vault signed, oldest first."""
        cur = self.db.execute("SELECT * FROM checkpoints ORDER BY id")
        return [row_dict(cur, row) for row in cur.fetchall()]

    def _dock_key(self, kid: bytes) -> bytes | None:
        """The recorded dock key with this key id (protocol.authority.key_id), if any."""
        for (key,) in self.db.execute("SELECT public_key FROM docks"):
            if authority.key_id(bytes(key)) == kid:
                return bytes(key)
        return None

    def docks(self) -> list[dict[str, object]]:
        """The dock keys that signed checkpoints, with their unit certificates."""
        cur = self.db.execute("SELECT * FROM docks ORDER BY id")
        return [row_dict(cur, row) for row in cur.fetchall()]


def meta_row(db: sqlite3.Connection) -> dict[str, Any]:
    """The meta table as one row: {key: value}."""
    return {str(k): v for k, v in db.execute("SELECT key, value FROM meta")}


def append_log(db: sqlite3.Connection, table: str, row: dict[str, Any]) -> int:
    """Append the log entry of `row` of `table` at the next index; return the index. O(log n):
    nothing but the entry is computed (the tree is hashed when a checkpoint is signed)."""
    entry = schema.log_entry(table, row)
    cur = db.execute(
        "INSERT INTO log(idx, kind, ref, entry, leaf) VALUES"
        " ((SELECT coalesce(max(idx) + 1, 0) FROM log), ?, ?, ?, ?)",
        (schema.log_kind(table, row), schema.log_ref(table, row), entry, log.leaf_hash(entry)))
    assert cur.lastrowid is not None
    return cur.lastrowid


def cert_key(cert: bytes) -> bytes:
    """The dock key a unit certificate (protocol.authority) names; its signature is not checked
    here (that needs the unit key: verify does it)."""
    try:
        doc = authority.check_cert(cbor.decode(cose.parse_sign1(cert).payload))
    except (cose.CoseError, cbor.CBORError, authority.AuthorityError) as exc:
        raise VaultError(f"not a dock certificate: {exc}") from exc
    return bytes(doc["key"])


def check_fact(kind: str, fields: dict[str, Any], public_key_of: Callable[[str], bytes | None],
               entry_at: Callable[[int], dict[str, Any] | None],
               dock_key_of: Callable[[bytes], bytes | None]) -> str:
    """Check a fact's signed statement against the vault; return the device it names.

    A head statement must be signed by that device's enrolled key; a receipt must name, by its
    log index, the entry of the very record it releases, and be signed by the dock key its key
    id names when the vault recorded that key (`dock_key_of(kid)`). VaultError says what does
    not fit."""
    statement = fields.get("statement", fields.get(kind))
    if isinstance(statement, bytearray | memoryview):
        statement = bytes(statement)
    if not isinstance(statement, bytes):
        raise VaultError(f"a {kind} fact carries its signed statement (bytes) as 'statement'")
    try:
        envelope = cose.parse_sign1(statement)
        doc = cbor.decode(envelope.payload)
    except (cose.CoseError, cbor.CBORError) as exc:
        raise VaultError(f"the {kind} statement is not a signed statement: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("type") != kind:
        raise VaultError(f"the statement is not a {kind}")
    device, seq, record = doc.get("device"), doc.get("seq"), doc.get("record")
    if not isinstance(device, str) or not isinstance(seq, int) or not isinstance(record, bytes):
        raise VaultError(f"the {kind} statement does not name a device, seq and record")
    for name, value in (("device", device), ("device_id", device), ("seq", seq),
                        ("record", record)):
        if name in fields and fields[name] != value:
            raise VaultError(f"the {kind} fact says {name} {fields[name]!r}, its statement"
                             f" {value!r}")
    if kind == "head":
        key = public_key_of(device)
        if key is None:
            raise VaultError(f"head statement of {device}, which this vault has not enrolled")
        try:
            authority.open_statement(statement, key, notes.ed25519_ok, kind)
        except authority.AuthorityError as exc:
            raise VaultError(f"head statement of {device}: {exc}") from exc
        return device
    index = doc.get("log")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise VaultError("the receipt names no log index")
    entry = entry_at(index)
    if entry is None:
        raise VaultError(f"the receipt names log entry {index}, which the log does not hold")
    if (entry.get("kind") not in ("record", "quarantine") or entry.get("device_id") != device
            or entry.get("seq") != seq or entry.get("record_sha256") != record):
        raise VaultError(f"the receipt for record {seq} of {device} names log entry {index},"
                         " which is not that record")
    dock_key = dock_key_of(envelope.kid)
    if dock_key is not None and not notes.ed25519_ok(dock_key, envelope.tbs, envelope.signature):
        raise VaultError(f"the receipt for record {seq} of {device} is not signed by the dock"
                         " key its key id names")
    return device
