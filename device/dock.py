"""The dock protocol server: answers the dock's requests and streams segment data.

Authority (protocol/authority.py). A recorder commissioned with its unit's key serves a host
only after the handshake: `hello` is answered with a fresh nonce, then `auth` must carry a
dock certificate the unit signed (not revoked by the policy in force) and the
dock's signature over this recorder, that nonce and the dock's own; the recorder answers with
its own signature, which proves to the dock that it holds its key. Until then, and to every
host of an uncommissioned recorder, only `hello` and `get_status` are answered: nothing is
listed, read, released, no clock is stepped, no policy taken. Each right of the certificate
opens its requests (RIGHT below); the session ends at the next `hello` or after
_SESSION_MS without a request.

Every free is proved: `release` must carry a receipt signed by the authenticated dock naming
this device, the record's number and the SHA-256 of its bytes; the store keeps the receipt
before it frees anything. Every clock step is a signed `clock_stepped` event (before, after,
stated uncertainty, the dock).

No request can stop the recorder: every field is range-checked when the message is parsed
(protocol/messages.py), any error inside a handler is answered as an error and logged (at a
bounded rate), and the serve loop outlives anything a peer or the link does. Recording runs
in its own task and never waits for this one.

Every request is safe to repeat, as a dock on a noisy line must (it asks again whenever an
answer was lost): a repeat of a request that changes state (_ONCE, by its rid, within a
session) gets the first answer again and is never applied twice — a clock is stepped once, a
record freed once, a policy adopted once; the others read state and are simply answered again.
A request too large for a noisy line comes staged (protocol/messages.py): its parts fill one
staging buffer (STAGE_MAX bytes at most, kept until the next hello or another staged request),
and `run` handles it like any other once its SHA-256 matches, under the same rules.

Requests are handled one at a time, in arrival order. Data for a `read` goes chunk by chunk
through the link (`send_data`), which streams each from the file through its one small buffer:
no chunk is ever whole in the heap. A `read_done` closes each read so the dock knows the
window is complete (or how much of it the segment had).
"""

import asyncio
import gc
import hashlib
import io
import os
import time

from device import FIRMWARE_VERSION
from device.hal import battery_state
from protocol import authority, messages
from protocol.compat import const
from protocol.ed25519 import verify
from protocol.manifest import record_hash

_LIST_LIMIT = const(64)
_SESSION_MS = const(600000)  # an authenticated session lapses after this long idle
_LOG_FIRST = const(20)  # peer errors logged in full before the log thins out
_LOG_EVERY = const(1000)
_AUTH_GAP_MS = const(250)  # one handshake's signature checks per this long: CPU for recording
_REMEMBERED = const(8)  # answers to state-changing requests kept, to answer a repeat the same

# Requests that change state: a repeat (the dock asks again when an answer was lost on the line)
# gets the first answer again, and is never applied twice.
_ONCE = ("auth", "clock_adjust", "release", "policy_set")

# request -> the certificate right it needs (None: answered before any handshake)
RIGHT = {
    "hello": None,
    "get_status": None,
    "auth": None,
    "ping": "clock",
    "clock_adjust": "clock",
    "list": "offload",
    "read": "offload",
    "read_record": "offload",
    "release": "offload",
    "head": "offload",
    "policy_set": "policy",
    "stage": None,  # bytes into a bounded buffer: nothing is done with them ...
    "run": None,  # ... until run, which applies the staged request's own right
}


class DockServer:
    def __init__(self, link, hal, store, key, clock, log, policies=None, recorder=None) -> None:
        self.link = link
        self.hal = hal
        self.store = store
        self.key = key
        self.clock = clock
        self._log = log
        self.policies = policies
        self.recorder = recorder
        self._nonce = b""  # the nonce of the last identify, until an auth uses it
        self._dock = None  # type: dict | None  # the certificate of the dock that proved it
        self._seen_ms = time.ticks_ms()
        self._auth_ms = time.ticks_add(time.ticks_ms(), -_AUTH_GAP_MS)
        self._answers = []  # type: list  # [(rid, type, answer payload)], newest last
        self._capture = None  # type: tuple | None  # (rid, type) whose answer is being kept
        self._staged = None  # type: tuple | None  # (sid, bytearray): a request coming in parts
        self.errors = 0  # answered with an error, since boot
        self._handlers = {
            "hello": self._hello,
            "auth": self._auth,
            "get_status": self._status,
            "ping": self._ping,
            "clock_adjust": self._clock_adjust,
            "list": self._list,
            "read": self._read,
            "read_record": self._read_record,
            "release": self._release,
            "head": self._head,
            "policy_set": self._policy_set,
            "stage": self._stage,
            "run": self._run,
        }

    async def serve(self) -> None:
        while True:
            try:
                await self.handle(await self.link.receive())
            except Exception as exc:  # noqa: BLE001 - the link or a send failed: go on
                self._note("dock server: %r" % (exc,))
                await asyncio.sleep_ms(100)

    async def send(self, msg) -> None:
        payload = messages.encode_message(msg)
        cap = self._capture
        if cap is not None and msg["rid"] == cap[0]:
            self._answers = (self._answers + [(cap[0], cap[1], payload)])[-_REMEMBERED:]
            self._capture = None
        await self.link.send(payload)

    def _note(self, text: str) -> None:
        """Log a peer's error, all of the first few, then one in _LOG_EVERY (a hostile host
        can send millions)."""
        self.errors += 1
        if self.errors <= _LOG_FIRST or self.errors % _LOG_EVERY == 0:
            self._log("%s (error %d)" % (text, self.errors))

    async def _error(self, rid: int, code: str, detail: str) -> None:
        self._note("error to dock: %s %s" % (code, detail))
        await self.send(messages.make("error", rid=rid, code=code, detail=detail[:200]))

    async def handle(self, payload) -> None:
        try:
            kind, msg = messages.parse_payload(payload, messages.REQUEST_ITEMS)
        except messages.ProtocolError as exc:
            await self._error(0, messages.E_BAD_REQUEST, str(exc))
            return
        except MemoryError:  # a request built to exhaust a small heap: refused, still answered
            gc.collect()
            await self._error(0, messages.E_BAD_REQUEST, "request too large to decode")
            return
        if kind != "msg":
            await self._error(0, messages.E_BAD_REQUEST, "a device takes no data chunks")
            return
        await self._dispatch(msg)

    async def _dispatch(self, msg) -> None:
        """Handle one well-formed request (as it came, or as staged)."""
        mtype, rid = msg["t"], msg["rid"]
        handler = self._handlers.get(mtype)
        if handler is None:
            await self._error(rid, messages.E_BAD_REQUEST, "%s is not a request" % mtype)
            return
        if mtype in _ONCE:
            for seen_rid, seen_type, answer in self._answers:
                if seen_rid == rid and seen_type == mtype:
                    await self.link.send(answer)  # a repeat: the same answer, not done again
                    return
            self._capture = (rid, mtype)
        refused = self._refusal(RIGHT[mtype])
        if refused:
            await self._error(rid, messages.E_UNAUTHORIZED, refused)
            return
        try:
            await handler(msg)
        except MemoryError:
            gc.collect()
            await self._error(rid, messages.E_INTERNAL, "out of memory")
        except Exception as exc:  # noqa: BLE001 - answered, never fatal
            await self._error(rid, messages.E_INTERNAL, "%s: %s" % (type(exc).__name__, exc))

    def _refusal(self, right) -> str:
        """Why a request needing `right` is refused now ("" if it is not)."""
        if right is None:
            return ""
        dock = self._dock
        now = time.ticks_ms()
        if dock is not None and time.ticks_diff(now, self._seen_ms) > _SESSION_MS:
            self._dock = dock = None
        if dock is None:
            return "no dock has proved its authority: hello, then auth"
        if right not in dock["may"]:
            return "dock %s may not %s" % (dock["dock"], right)
        self._seen_ms = now
        return ""

    # -- the handshake -------------------------------------------------------------------------
    def _session(self) -> dict:
        """The authenticated dock's certificate (handlers run only once `_refusal` passed)."""
        dock = self._dock
        if dock is None:
            raise ValueError("no authenticated dock")
        return dock

    def _unit_key(self) -> bytes:
        return self.policies.unit_key if self.policies else b""

    async def _hello(self, msg) -> None:
        self._dock = None  # a new host: whatever was proved before is gone
        self._answers = []  # ... and the answers it might have asked for again
        self._staged = None
        self._nonce = os.urandom(authority.NONCE_SIZE)
        unit = self._unit_key()
        self._log("hello from %s" % msg["dock"][:64])
        await self.send(messages.make(
            "identify",
            rid=msg["rid"],
            proto=messages.PROTOCOL_VERSION,
            device_id=self.hal.device_id,
            fw=FIRMWARE_VERSION,
            public_key=self.key.public,
            key_id=self.key.kid,
            limits={"chunk": self.link.CHUNK, "max_read": messages.MAX_READ},
            nonce=self._nonce,
            unit=authority.key_id(unit) if len(unit) == 32 else b"",
        ))

    async def _auth(self, msg) -> None:
        now_ms = time.ticks_ms()
        if time.ticks_diff(now_ms, self._auth_ms) < _AUTH_GAP_MS:
            # Each try costs two signature checks; a flood of them must not starve recording.
            await self._error(msg["rid"], messages.E_BUSY, "one handshake per %d ms"
                              % _AUTH_GAP_MS)
            return
        self._auth_ms = now_ms
        nonce, self._nonce = self._nonce, b""  # one try per nonce
        self._dock = None
        unit = self._unit_key()
        try:
            if len(unit) != 32:
                raise authority.AuthorityError("this recorder is not commissioned to a unit")
            if not nonce:
                raise authority.AuthorityError("no hello to answer: hello first")
            cert = authority.open_cert(msg["cert"], unit, verify)
            # Not judged by this recorder's clock: docks set that clock, and one set wrong
            # must never lock out the dock that would correct it (see protocol/authority.py).
            authority.admit(cert, None, self.policies.current.get("revoked_docks", []))
            proof = authority.dock_proof(self.hal.device_id, nonce, msg["nonce"], msg["cert"])
            if not verify(cert["key"], proof, msg["sig"]):
                raise authority.AuthorityError("the dock's proof does not verify")
        except authority.AuthorityError as exc:
            await self._error(msg["rid"], messages.E_UNAUTHORIZED, str(exc))
            return
        sig = self.key.sign(authority.device_proof(self.hal.device_id, nonce, msg["nonce"],
                                                   cert["key"]))
        self._dock = cert
        self._seen_ms = time.ticks_ms()
        self._log("dock %s proved its authority (%s)" % (cert["dock"], ", ".join(cert["may"])))
        await self.send(messages.make("auth_ok", rid=msg["rid"], dock=cert["dock"], sig=sig))

    # -- requests ---------------------------------------------------------------------------
    async def _status(self, msg) -> None:
        hal = self.hal
        free, total = hal.storage.usage()
        health = {"faults": hal.selftest(), "foreign": self.store.foreign(),
                  "storage_full": bool(self.recorder and self.recorder.full),
                  "errors": self.errors}
        pending = len(self.store.pending())
        gc.collect()
        health["heap_free"] = gc.mem_free()  # after the collection: what is really free
        await self.send(messages.make(
            "status",
            rid=msg["rid"],
            battery_main=battery_state(hal.battery_main),
            battery_backup=battery_state(hal.battery_backup),
            storage={"free": free, "total": total},
            clock=self.clock.describe(),
            health=health,
            pending=pending,
            policy=self.policies.name if self.policies else "",
            recording=bool(self.recorder and (self.recorder.recording or self.recorder.busy)),
        ))

    async def _ping(self, msg) -> None:
        t2 = self.clock.now_us()
        # t3 is taken as late as possible: just before the reply is encoded.
        await self.send(messages.make("pong", rid=msg["rid"], t1=msg["t1"], t2=t2,
                                      t3=self.clock.now_us()))

    async def _clock_adjust(self, msg) -> None:
        delta, uncertainty = msg["delta_us"], msg["uncertainty_us"]
        before, after = self.clock.adjust(delta, uncertainty)
        seq = 0
        if self.recorder:
            seq = self.recorder.event("clock_stepped", {
                "before_us": before, "after_us": after, "delta_us": delta,
                "uncertainty_us": uncertainty, "dock": self._session()["dock"]})
        self._log("clock stepped by %d us" % delta)
        await self.send(messages.make("clock_set", rid=msg["rid"], before_us=before,
                                      after_us=after, event=seq))

    async def _list(self, msg) -> None:
        limit = min(msg["limit"], _LIST_LIMIT)
        seqs = self.store.pending()  # ascending; no filtered copy (thousands on a full card)
        at = 0
        while at < len(seqs) and seqs[at] < msg["from_seq"]:
            at += 1
        items = []
        for seq in seqs[at:at + limit]:
            record = self.store.read_record(seq)  # named by hash and size; read_record moves it
            items.append({"seq": seq, "record_sha256": record_hash(record), "size": len(record),
                          "stored": self.store.data_size(seq)})
        more = len(seqs) - at > len(items)
        seqs = None  # type: ignore[assignment]  # let it go before the answer is encoded
        await self.send(messages.make("records", rid=msg["rid"], items=items, more=more))

    async def _read(self, msg) -> None:
        try:
            f = self.store.open_data(msg["seq"])
        except OSError:
            await self._error(msg["rid"], messages.E_UNKNOWN_RECORD,
                              "no data for record %d" % msg["seq"])
            return
        await self._stream(msg, f, messages.KIND_DATA)

    async def _read_record(self, msg) -> None:
        try:
            record = self.store.read_record(msg["seq"])
        except OSError:
            await self._error(msg["rid"], messages.E_UNKNOWN_RECORD,
                              "record %d is not here" % msg["seq"])
            return
        await self._stream(msg, io.BytesIO(record), messages.KIND_RECORD)

    async def _stream(self, msg, f, kind: int) -> None:
        """Send each range the read asks for (messages.ranges) of `f` in chunks of msg["chunk"]
        bytes at most, each streamed by the link from the file; then read_done saying how many
        bytes there were in all (fewer than asked: the file ends there)."""
        seq = msg["seq"]
        link = self.link
        room = min(msg["chunk"], link.CHUNK)
        total = 0
        with f:
            size = f.seek(0, 2)
            for offset, length in messages.ranges(msg):
                have = min(length, max(0, size - offset))
                f.seek(offset)
                sent = 0
                while sent < have:
                    n = min(room, have - sent)
                    await link.send_data(kind, seq, offset + sent, f, n)
                    sent += n
                total += sent
                if sent < length:
                    break  # the end of the segment
        await self.send(messages.make("read_done", rid=msg["rid"], seq=seq,
                                      offset=msg["offset"], length=total))

    async def _stage(self, msg) -> None:
        sid, total, offset, data = msg["sid"], msg["total"], msg["offset"], msg["data"]
        if offset + len(data) > total:
            await self._error(msg["rid"], messages.E_BAD_REQUEST, "part past the staged size")
            return
        staged = self._staged
        if staged is None or staged[0] != sid or len(staged[1]) != total:
            self._staged = None  # let the last one go before the next is made
            gc.collect()
            staged = self._staged = (sid, bytearray(total))
        staged[1][offset:offset + len(data)] = data
        await self.send(messages.make("staged", rid=msg["rid"], sid=sid, offset=offset,
                                      length=len(data)))

    async def _run(self, msg) -> None:
        rid, staged = msg["rid"], self._staged
        if (staged is None or staged[0] != rid
                or hashlib.sha256(staged[1]).digest() != msg["sha256"]):
            await self._error(rid, messages.E_NOT_STAGED, "no staged request %d with that hash"
                              % rid)
            return
        try:
            kind, inner = messages.parse_payload(staged[1], messages.REQUEST_ITEMS)
        except messages.ProtocolError as exc:
            await self._error(rid, messages.E_BAD_REQUEST, "staged: %s" % exc)
            return
        if kind != "msg" or inner["rid"] != rid or inner["t"] in ("hello", "stage", "run"):
            await self._error(rid, messages.E_BAD_REQUEST, "staged: not a request to run")
            return
        await self._dispatch(inner)

    async def _release(self, msg) -> None:
        seq = msg["seq"]
        try:
            record = self.store.read_record(seq)
        except OSError:
            await self._error(msg["rid"], messages.E_UNKNOWN_RECORD, "record %d is not here" % seq)
            return
        digest = record_hash(record)
        # The dock proves it holds this exact record, with a receipt it signed: anything else
        # frees nothing.
        if digest != msg["manifest_sha256"]:
            await self._error(msg["rid"], messages.E_MISMATCH, "record %d hash differs" % seq)
            return
        dock = self._session()
        try:
            r = authority.open_statement(msg["receipt"], dock["key"], verify,
                                         authority.TYPE_RECEIPT)
        except authority.AuthorityError as exc:
            await self._error(msg["rid"], messages.E_MISMATCH, "receipt: %s" % exc)
            return
        if (r.get("device"), r.get("seq"), r.get("record"), r.get("dock")) != (
                self.hal.device_id, seq, digest, dock["dock"]) or r.get("status") not in (
                authority.STATUS_STORED, authority.STATUS_QUARANTINED):
            await self._error(msg["rid"], messages.E_MISMATCH,
                              "the receipt does not name record %d of this recorder" % seq)
            return
        self.store.release(seq, msg["receipt"])
        self._log("released record %d (%s by %s)" % (seq, r["status"], dock["dock"]))
        await self.send(messages.make("released", rid=msg["rid"], seq=seq))

    async def _head(self, msg) -> None:
        doc = authority.head(self.hal.device_id, self.store.head_seq, self.store.head_hash,
                             self._session()["dock"], msg["nonce"])
        await self.send(messages.make(
            "head_ok", rid=msg["rid"],
            statement=authority.sign_statement(doc, self.key.kid, self.key.sign)))

    async def _policy_set(self, msg) -> None:
        from protocol.policy import PolicyError

        if self.policies is None:
            await self._error(msg["rid"], messages.E_BAD_REQUEST, "this device takes no policy")
            return
        try:
            name = self.policies.adopt(msg["policy"])
        except PolicyError as exc:
            if self.recorder:
                self.recorder.event("policy_rejected", {"reason": str(exc)})
            await self._error(msg["rid"], messages.E_POLICY, str(exc))
            return
        if self.recorder:
            self.recorder.event("policy_adopted", {"policy": name})
        self._log("adopted policy %s" % name)
        await self.send(messages.make("policy_ok", rid=msg["rid"], policy=name))
