"""A recorder written in CPython that speaks the wire protocol on a real pty and misbehaves on
purpose: the hostile device on the dock's port.

It holds a genuine device key (its records are validly signed and it completes the handshake),
so the dock gets past identification and meets what a buggy or malicious firmware would send:
`on_read`, `on_list` and friends replace its answers.
"""

from __future__ import annotations

import os
import threading
import time
import tty
from collections.abc import Callable
from typing import Any

from host_agent.keys import verify
from protocol import authority, framing, messages
from protocol.manifest import record_hash
from tests.factories import RecordChain

Answer = list[bytes]  # payloads to send back


class HostileRecorder(threading.Thread):
    def __init__(self, chain: RecordChain, unit_public: bytes) -> None:
        super().__init__(daemon=True)
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self.chain = chain
        self.unit_public = unit_public
        self.nonce = b""
        self.dock = ""
        self.records: dict[int, tuple[bytes, bytes, int]] = {}  # seq -> (record, data, stored)
        self.requests: list[dict[str, Any]] = []
        self.stop = False
        self.on_read: Callable[[dict[str, Any]], Answer] | None = None
        self.on_list: Callable[[dict[str, Any]], Answer] | None = None
        self.on_request: Callable[[dict[str, Any]], Answer | None] | None = None  # any, first
        self.shown_key = chain.public_key  # another recorder's key makes it a clone

    def add_segment(self, data: bytes, stored: int | None = None, **overrides: Any) -> int:
        record, fields = self.chain.next_segment(data, **overrides)
        self.records[fields["seq"]] = (record, data, len(data) if stored is None else stored)
        return int(fields["seq"])

    @staticmethod
    def msg(mtype: str, **fields: Any) -> bytes:
        return messages.encode_message(messages.make(mtype, **fields))

    def close(self) -> None:
        self.stop = True
        os.close(self._slave)

    def run(self) -> None:
        decoder = framing.FrameDecoder()
        while not self.stop:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            decoder.receive_data(data)
            while (payload := decoder.next_frame()) is not None:
                _, req = messages.parse_payload(payload)
                self.requests.append(req)
                for out in self.answer(req):
                    try:
                        os.write(self.master, framing.encode_frame(out))
                    except OSError:
                        return

    def answer(self, req: dict[str, Any]) -> Answer:
        t, rid = req["t"], req["rid"]
        chain = self.chain
        if self.on_request and (answer := self.on_request(req)) is not None:
            return answer
        if t == "hello":
            self.nonce = os.urandom(16)
            return [self.msg("identify", rid=rid, proto=1, device_id=chain.device_id, fw="0.1.0",
                             public_key=self.shown_key, limits={"max_read": 1 << 20},
                             nonce=self.nonce, unit=authority.key_id(self.unit_public))]
        if t == "auth":
            cert = authority.open_cert(req["cert"], self.unit_public, verify)
            self.dock = cert["dock"]
            proof = authority.device_proof(chain.device_id, self.nonce, req["nonce"], cert["key"])
            return [self.msg("auth_ok", rid=rid, dock=cert["dock"],
                             sig=chain.private_key.sign(proof))]
        if t == "ping":
            now = time.time_ns() // 1000
            return [self.msg("pong", rid=rid, t1=req["t1"], t2=now, t3=now)]
        if t == "clock_adjust":
            return [self.msg("clock_set", rid=rid, before_us=0, after_us=0, event=0)]
        if t == "get_status":
            return [self.msg("status", rid=rid, battery_main={"pct": 100, "mv": 4200,
                                                              "charging": True},
                             battery_backup={"pct": 100, "mv": 3000, "charging": False},
                             storage={"free": 1 << 34, "total": 1 << 35},
                             clock={"state": "synced"}, health={"faults": []},
                             pending=len(self.records), policy="gx-water-2019/1",
                             recording=False)]
        if t == "list":
            if self.on_list:
                return self.on_list(req)
            items = [{"seq": s, "record_sha256": record_hash(r), "size": len(r), "stored": n}
                     for s, (r, _, n) in sorted(self.records.items()) if s >= req["from_seq"]]
            return [self.msg("records", rid=rid, items=items, more=False)]
        if t == "read_record":
            record = self.records[req["seq"]][0]
            part = record[req["offset"]:req["offset"] + req["length"]]
            return [messages.encode_data(req["seq"], req["offset"], part, messages.KIND_RECORD),
                    self.msg("read_done", rid=rid, seq=req["seq"], offset=req["offset"],
                             length=len(part))]
        if t == "read":
            if self.on_read:
                return self.on_read(req)
            _, data, _ = self.records[req["seq"]]
            part = data[req["offset"]:req["offset"] + req["length"]]
            return [messages.encode_data(req["seq"], req["offset"], part),
                    self.msg("read_done", rid=rid, seq=req["seq"], offset=req["offset"],
                             length=len(part))]
        if t == "release":
            self.records.pop(req["seq"], None)
            return [self.msg("released", rid=rid, seq=req["seq"])]
        if t == "head":
            doc = authority.head(chain.device_id, chain.seq, chain.prev, self.dock, req["nonce"])
            return [self.msg("head_ok", rid=rid, statement=authority.sign_statement(
                doc, chain.kid, chain.private_key.sign))]
        return [self.msg("error", rid=rid, code="bad_request", detail=t)]
