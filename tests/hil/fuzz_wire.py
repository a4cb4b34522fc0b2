"""Hostile requests in valid frames and valid CBOR, fired at a live recorder on its pty.

Every request is well framed (CRC right) and decodes as deterministic CBOR, so it gets past the
framing and into the dock server; what it carries is hostile: every request type with extreme
integers, wrong types, missing and extra fields, huge lists and maps (up to the frame limit),
unknown types, nested structures, and, inside a session a real certified dock opened, reads
far past the end, clock steps to the bounds, and releases with receipts that are forged,
replayed for another record, or replayed after the record is gone.

`fire(port, count, seed, identity)` sends `count` requests with at most WINDOW unanswered,
reads every answer on a thread, and returns the figures. The recorder must answer each (an
error is an answer) and keep recording; the caller checks the chain afterwards.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from host_agent.keys import DockIdentity
from host_agent.transport.serial import SerialTransport
from protocol import authority, cbor, messages

WINDOW = 8  # requests in flight
BLOCK = 500  # requests per block; blocks alternate between no session and a certified one
MAX_PAYLOAD = 4000  # the recorder takes request frames up to 4096 bytes

_EXTREMES = [0, -1, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**48, 2**63 - 1, -(2**63),
             2**64 - 1, -(2**64), 10**18]
_TYPES = ["hello", "auth", "get_status", "ping", "clock_adjust", "list", "read", "read_record",
          "release", "head", "policy_set", "stage", "run"]


@dataclass
class Figures:
    sent: int = 0
    answered: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    sessions: int = 0  # handshakes the fuzzer completed with its certified dock
    internal: list[str] = field(default_factory=list)  # what "internal" answers said (a handler
    # that raised: answered, but worth knowing about)

    @property
    def per_s(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


class _Fuzzer:
    def __init__(self, transport: SerialTransport, seed: int,
                 identity: DockIdentity | None) -> None:
        self.t = transport
        self.rng = random.Random(seed)
        self.identity = identity
        self.rid = 0
        self.run_next: bytes | None = None  # the hash of a request staged for the next rid
        self.nonce = b""
        self.device_id = ""
        self.records: list[tuple[int, bytes]] = []  # (seq, record hash) seen in listings
        self.receipts: list[bytes] = []  # receipts made (and replayed) by the fuzzer

    # -- values --------------------------------------------------------------------------------
    def value(self, depth: int = 0) -> Any:
        r = self.rng.random()
        if r < 0.3:
            return self.rng.choice(_EXTREMES) if self.rng.random() < 0.5 else \
                self.rng.randrange(-1000, 1000)
        if r < 0.45:
            return os.urandom(self.rng.choice([0, 1, 15, 16, 17, 32, 64, 65, 1000, 3000]))
        if r < 0.55:
            return self.rng.choice(["", "x" * 300, "../../etc", "\u202e", "SIM-0000"])
        if r < 0.6:
            return self.rng.choice([True, False, None])
        if depth < 3 and r < 0.8:
            return [self.value(depth + 1) for _ in range(self.rng.randrange(0, 40))]
        if depth < 3:
            return {self.rng.choice(["seq", "t", 1, -8, b"k", "x"]) : self.value(depth + 1)
                    for _ in range(self.rng.randrange(0, 10))}
        return 0

    def hostile(self) -> dict[str, Any]:
        """A request of any type with fields mutated: wrong, extreme, missing, extra."""
        mtype = self.rng.choice(_TYPES + ["nonsense", "", "identify", "records", "error"])
        self.rid += 1
        msg: dict[str, Any] = {"t": mtype, "rid": self.rid}
        for name, *_ in messages.SCHEMA.get(mtype, ()):
            if name != "rid" and self.rng.random() < 0.85:
                msg[name] = self.value()
        for _ in range(self.rng.randrange(0, 3)):
            msg[self.rng.choice(["extra", "t2", "x" * 20])] = self.value()
        if self.rng.random() < 0.05:
            msg["rid"] = self.rng.choice(_EXTREMES)
        if self.rng.random() < 0.02:
            msg["t"] = self.value()
        return msg

    def in_session(self) -> dict[str, Any]:
        """A well-typed request inside a certified session, with hostile values."""
        self.rid += 1
        rid, rng = self.rid, self.rng
        # Clock steps and policies each sign an event into the chain: fewer of those.
        kind = rng.choices(range(7), weights=[30, 2, 35, 20, 1, 12, 6])[0]
        if kind == 0:
            read = {"t": "read", "rid": rid, "seq": rng.choice([0, 1, 2, 2**32 - 1]),
                    "offset": rng.choice([0, 2**48, 2**40, 12345]),
                    "length": rng.choice([0, 1, messages.MAX_READ]),
                    "chunk": rng.choice([16, 100, 32768, 65536])}
            if rng.random() < 0.3:  # more ranges: ascending or not, too many, too long
                read["more"] = [[rng.choice([0, 100, 20000, 2**48]), rng.choice([0, 1, 4096])]
                                for _ in range(rng.choice([1, 3, messages.READ_RANGES]))]
            return read
        if kind == 6:
            return self._staged(rid)
        if kind == 1:
            return {"t": "clock_adjust", "rid": rid,
                    "delta_us": rng.choice([0, 1, -1, 10**6, -(10**6)]),
                    "uncertainty_us": rng.choice([0, 2**40])}
        if kind == 2 and self.records:
            seq, record_sha256 = rng.choice(self.records)
            receipt = self._receipt(seq) if rng.random() < 0.5 else (
                rng.choice(self.receipts) if self.receipts else os.urandom(100))
            other = rng.choice([seq, seq + 1, 0])
            return {"t": "release", "rid": rid, "seq": other,
                    "manifest_sha256": rng.choice([record_sha256, os.urandom(32)]),
                    "receipt": receipt}
        if kind == 3:
            return {"t": "list", "rid": rid, "from_seq": rng.choice([0, 1, 2**32 - 1]),
                    "limit": rng.choice([1, 64, 1024])}
        if kind == 4:
            return {"t": "policy_set", "rid": rid, "policy": os.urandom(rng.randrange(1, 3800))}
        return {"t": "head", "rid": rid, "nonce": os.urandom(16)}

    def _staged(self, rid: int) -> dict[str, Any]:
        """A staged request: a part (maybe past its size, or of another sid), or the run of
        what was staged (maybe with the wrong hash, or of an inner request that is not one)."""
        rng = self.rng
        if self.run_next is not None:  # run what the last request staged whole
            sha256, self.run_next = self.run_next, None
            return {"t": "run", "rid": rid, "sha256": sha256}
        if rng.random() < 0.3:  # stage a whole request (rid + 1), for the next one to run
            inner_msg = self.in_session()  # takes rid + 1
            self.rid -= 1
            inner = (self.encode(inner_msg) if inner_msg["t"] not in ("stage", "run") else
                     None) or b"M"
            self.run_next = hashlib.sha256(inner).digest()
            return {"t": "stage", "rid": rid, "sid": rid + 1, "total": len(inner), "offset": 0,
                    "data": inner}
        if rng.random() < 0.5:
            total = rng.choice([1, 64, messages.STAGE_MAX])
            return {"t": "stage", "rid": rid, "sid": rng.choice([rid, self.rid - 1, 0]),
                    "total": total, "offset": rng.choice([0, total - 1, total, 2**40]),
                    "data": os.urandom(rng.choice([0, 1, 100, 2000]))}
        inner = self.encode(self.in_session()) or b"M"
        return {"t": "run", "rid": rid,
                "sha256": rng.choice([hashlib.sha256(inner).digest(), os.urandom(32)])}

    def _receipt(self, seq: int) -> bytes:
        """A receipt signed by the fuzzer's dock for a record it never stored: status and log
        index made up. Kept to be replayed later for other records."""
        assert self.identity is not None
        doc = authority.receipt(self.device_id, seq + self.rng.choice([0, 1]),
                                os.urandom(32), "stored", 0, self.identity.dock_id)
        signed = authority.sign_statement(doc, authority.key_id(self.identity.public_key),
                                          self.identity.sign)
        self.receipts = (self.receipts + [signed])[-20:]
        return signed

    def encode(self, msg: dict[str, Any]) -> bytes | None:
        try:
            payload = b"M" + cbor.encode(msg)
        except (cbor.CBORError, TypeError, ValueError):
            return None
        return payload if len(payload) <= MAX_PAYLOAD else None


def fire(port: str, count: int, seed: int, identity: DockIdentity | None) -> Figures:
    """Send `count` hostile requests to the recorder on `port`; return what came back."""
    transport = SerialTransport(port)
    transport.open()
    fz = _Fuzzer(transport, seed, identity)
    figures = Figures()
    inflight = threading.Semaphore(WINDOW)
    done = threading.Event()
    replies: list[dict[str, Any]] = []

    def reader() -> None:
        while not done.is_set():
            payload = transport.receive(0.2)
            if payload is None:
                continue
            try:
                kind, body = messages.parse_payload(payload)
            except messages.ProtocolError:
                figures.codes["unparsable answer"] += 1
                continue
            if kind != "msg":
                continue  # data chunks of a read
            figures.answered += 1  # every request gets one message back (an error is one)
            figures.codes[body.get("code", body["t"])] += 1
            if body.get("code") == messages.E_INTERNAL and len(figures.internal) < 20:
                figures.internal.append(str(body.get("detail")))
            replies.append(body)
            inflight.release()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    t0 = time.monotonic()
    try:
        block = -1
        while figures.sent < count:
            if figures.sent // BLOCK != block:  # blocks alternate: no session, then a session
                block = figures.sent // BLOCK
                in_session = identity is not None and block % 2 == 1
                _handshake(fz, transport, replies, identity if in_session else None, figures,
                           inflight)
            msg = fz.in_session() if in_session and fz.rng.random() < 0.3 else fz.hostile()
            payload = fz.encode(msg)
            if payload is None:
                continue
            if not inflight.acquire(timeout=10):
                raise RuntimeError(f"the recorder stopped answering after {figures.sent}"
                                   f" requests ({figures.answered} answered)")
            transport.send(payload)
            figures.sent += 1
        deadline = time.monotonic() + 10
        while figures.answered < figures.sent and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        figures.seconds = time.monotonic() - t0
        done.set()
        thread.join()
        transport.close()
    return figures


def _handshake(fz: _Fuzzer, transport: SerialTransport, replies: list[dict[str, Any]],
               identity: DockIdentity | None, figures: Figures,
               inflight: threading.Semaphore) -> None:
    """A hello (which ends any session), then, with an identity, a real certified session
    (auth, list) amid the noise, as a dock would open it."""
    def ask(msg: dict[str, Any]) -> dict[str, Any] | None:
        fz.rid += 1
        msg["rid"] = fz.rid
        start = len(replies)
        inflight.acquire(timeout=10)
        transport.send(b"M" + cbor.encode(msg))
        figures.sent += 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for body in replies[start:]:
                if body.get("rid") == msg["rid"]:
                    return body
            time.sleep(0.005)
        return None

    hello = ask({"t": "hello", "proto": 1, "dock": "fuzzer"})
    if identity is None or not hello or hello["t"] != "identify":
        return
    time.sleep(0.3)  # the recorder takes one handshake per 250 ms
    fz.device_id = hello["device_id"]
    nonce = os.urandom(16)
    proof = authority.dock_proof(fz.device_id, hello["nonce"], nonce, identity.cert)
    ok = ask({"t": "auth", "cert": identity.cert, "nonce": nonce, "sig": identity.sign(proof)})
    if ok and ok["t"] == "auth_ok":
        figures.sessions += 1
        listing = ask({"t": "list", "from_seq": 1, "limit": 8})
        if listing and listing["t"] == "records":
            fz.records = [(it["seq"], it["record_sha256"]) for it in listing["items"]]
