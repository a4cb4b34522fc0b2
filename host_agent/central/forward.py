"""Forwarding from a dock: its vault's log, entry by entry, to the central service.

The central holds the cursor: a forwarder asks how many entries of this vault's log the
central has, and sends the rest in order, each batch with the dock's checkpoint of the log up
to the batch's end. Before a batch goes, the segments its records name go to the object store
under their SHA-256, with uploads the central hands out for them (wire "uploads"): a
presigned PUT each, so the dock holds no credentials for the store, and the store itself
refuses bytes that do not hash to the segment's SHA-256, locks them in COMPLIANCE mode, and
holds them under a legal hold when the phase names a case; hall footage the same.
Everything is idempotent: an object the central finds there is not put again, an entry the
central holds must only match; so any crash, of the dock or the central, is followed by a
run that resumes where the central stands, at least once and never twice.

The central's cosigned checkpoints are kept in VAULT/cosigned/ (one file per tree size):
`bodycam vault verify VAULT --witness VAULT/cosigned` checks the vault against them, and they
prove the central saw the log.
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_agent.central import http, wire
from host_agent.custody.archive import row_problem
from host_agent.keys import DockIdentity
from host_agent.vault import Vault, log
from host_agent.vault import checkpoint as notes
from host_agent.vault.files import fsync_dir, write_durable
from protocol import authority, cbor, cose, manifest

COSIGNED = "cosigned"


class ForwardError(Exception):
    """Forwarding cannot go on; the message says why (the next run resumes)."""


@dataclass
class Progress:
    sent: int = 0  # entries the central took in this run
    records: int = 0
    objects_put: int = 0
    bytes_put: int = 0
    next: int = 0  # entries of the log the central holds
    size: int = 0  # entries of the log
    cosigned: bytes = b""
    seconds: float = 0.0
    batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def backlog(self) -> int:
        return max(0, self.size - self.next)

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "records": self.records, "objects_put": self.objects_put,
                "bytes_put": self.bytes_put, "next": self.next, "size": self.size,
                "backlog": self.backlog, "seconds": round(self.seconds, 3),
                "batches": self.batches}


class Forwarder:
    def __init__(self, vault: Vault, identity: DockIdentity, url: str, *,
                 batch: int = 256, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls  # what an https central's (and its store's) certificate is checked against
        self.vault = vault
        self.identity = identity
        self.url = url
        self.batch = batch
        self.store = http.Uploads(tls=tls)
        self._queued: list[tuple[bytes, int, bool, Path]] = []

    def _ask(self, doc: dict[str, Any]) -> dict[str, Any]:
        body = wire.request({**doc, "dock": self.identity.dock_id, "cert": self.identity.cert,
                             "origin": self.vault.origin, "t": int(time.time() * 1e6)},
                            authority.key_id(self.identity.public_key), self.identity.sign)
        try:
            return http.post(self.url, body, tls=self.tls)
        except http.CentralError as exc:
            raise ForwardError(str(exc)) from None

    def state(self) -> dict[str, Any]:
        return self._ask({"type": "state"})

    def run(self, progress: Any = None) -> Progress:
        """Forward everything the log holds now; what was done."""
        try:
            return self._run(progress)
        finally:
            self.store.close()
            self._queued = []

    def _run(self, progress: Any) -> Progress:
        t0 = time.monotonic()
        out = Progress()
        state = self.state()
        if state.get("flagged"):
            raise ForwardError(f"the central stopped this vault's forwarding:"
                               f" {state['flagged']}")
        # the vault signs its own checkpoint first: the dock key (and its certificate) is then
        # one the vault recorded, so `vault verify --witness VAULT/cosigned` trusts the notes
        self.vault.checkpoint(self.identity)
        leaves = self.vault.log_leaves()
        out.size, out.next = len(leaves), int(state["next"])
        frontier = log.Frontier()
        start = min(out.next, out.size)
        for leaf in leaves[:start]:
            frontier.append(leaf)
        while True:
            end = min(out.size, start + self.batch)
            items = [self._item(idx, bytes(entry), out) for idx, entry in self.vault.db.execute(
                "SELECT idx, entry FROM log WHERE idx >= ? AND idx < ? ORDER BY idx",
                (start, end))]
            self._upload(out)
            for leaf in leaves[start:end]:
                frontier.append(leaf)
            note = notes.sign(self.vault.origin, end, frontier.root(), self.identity)
            answer = self._ask({"type": "forward", "from": start, "entries": items,
                                "checkpoint": note})
            out.batches += 1
            out.sent += len(items) - int(answer.get("duplicates", 0))
            out.next = int(answer["next"])
            cosigned = answer.get("cosigned")
            if isinstance(cosigned, bytes):
                self._keep(end, cosigned)
                out.cosigned = cosigned
            if progress is not None:
                progress(out.next, out.size)
            start = end
            if start >= out.size:
                break
        out.seconds = time.monotonic() - t0
        return out

    def _item(self, idx: int, entry: bytes, out: Progress) -> dict[str, Any]:
        item: dict[str, Any] = {"entry": entry}
        doc = cbor.decode(entry)
        if not isinstance(doc, dict):
            return item
        if doc.get("kind") == "record":
            device_id, seq = str(doc["device_id"]), int(doc["seq"])
            record = self.vault.manifest_path(device_id, seq).read_bytes()
            item["record"] = record
            fields = manifest.decode(cose.parse_sign1(record).payload)
            if fields["kind"] == manifest.KIND_SEGMENT and doc.get("data_state") == "stored":
                self._put(fields["sha256"], fields["size"],
                          hold=bool((fields.get("phase") or {}).get("case")), out=out)
            out.records += 1
        elif doc.get("kind") == "custody" and doc.get("what") == "hall" and (
                row_problem(doc) is None):  # a made-up row goes as it is: the central refuses it
            f = json.loads(str(doc["fields"]))
            self._put(bytes.fromhex(f["object"]), int(f["size"]), hold=True, out=out)
        return item

    def _put(self, sha: bytes, size: int, *, hold: bool, out: Progress) -> None:
        """Queue the object for this batch's uploads (`_upload`)."""
        path = self.vault.object_path(sha)
        if not path.is_file():
            return  # removed by the retention job: the central knows it by the register
        self._queued.append((sha, size, hold, path))

    def _upload(self, out: Progress) -> None:
        """Put the queued objects with the uploads the central hands out for them."""
        queued, self._queued = self._queued, []
        for part in _parts(queued):
            answer = self._ask({"type": "uploads", "objects": [
                {"sha256": sha, "size": size, "hold": hold} for sha, size, hold, _ in part]})
            given = answer.get("uploads")
            if not isinstance(given, list) or len(given) != len(part):
                raise ForwardError("the central's answer does not name each upload")
            for (sha, size, _, path), up in zip(part, given, strict=True):
                if not isinstance(up, dict) or up.get("sha256") != sha:
                    raise ForwardError("the central's answer does not name each upload")
                if up.get("held"):
                    continue
                try:
                    self.store.put(str(up["url"]), dict(up["headers"]), path, size)
                except http.CentralError as exc:
                    raise ForwardError(str(exc)) from None
                out.objects_put += 1
                out.bytes_put += size

    def _keep(self, size: int, note: bytes) -> None:
        folder = self.vault.root / COSIGNED
        if not folder.is_dir():
            folder.mkdir()
            fsync_dir(self.vault.root)
        path = folder / f"{size:012d}.note"
        if not path.exists():
            write_durable(self.vault.root / "tmp", path, note)
            fsync_dir(folder)


UPLOAD_BYTES = 1 << 30  # asked for at once: put well within the uploads' hour at 25 Mbit/s


def _parts(queued: list[tuple[bytes, int, bool, Path]]
           ) -> list[list[tuple[bytes, int, bool, Path]]]:
    """The queue cut into asks of at most wire.MAX_UPLOADS objects and UPLOAD_BYTES bytes."""
    parts: list[list[tuple[bytes, int, bool, Path]]] = []
    size = 0
    for q in queued:
        if not parts or len(parts[-1]) >= wire.MAX_UPLOADS or size + q[1] > UPLOAD_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(q)
        size += q[1]
    return parts
