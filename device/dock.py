"""The dock protocol server: answers the dock's requests and streams segment data.

Requests are handled one at a time, in arrival order. Data for a `read` is built in the link's
preallocated transmit buffer: the file is read straight into the payload area, the chunk
header is written in front of it, and the link sends it. A `read_done` closes each read so the
dock knows the window is complete (or how much of it the segment had).
"""

from device import FIRMWARE_VERSION
from device.hal import battery_state
from protocol import messages
from protocol.compat import const
from protocol.manifest import record_hash

MAX_READ = const(16 * 1024 * 1024)
_LIST_LIMIT = const(64)
_LIST_BYTES = const(2048)  # records per answer: a fragmented small heap still fits it


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
        self._handlers = {
            "policy_set": self._policy_set,
            "hello": self._hello,
            "get_status": self._status,
            "ping": self._ping,
            "clock_adjust": self._clock_adjust,
            "list": self._list,
            "read": self._read,
            "release": self._release,
        }

    async def serve(self) -> None:
        while True:
            await self.handle(await self.link.receive())

    async def send(self, msg) -> None:
        await self.link.send(messages.encode_message(msg))

    async def _error(self, rid: int, code: str, detail: str) -> None:
        self._log("error to dock: %s %s" % (code, detail))
        await self.send(messages.make("error", rid=rid, code=code, detail=detail))

    async def handle(self, payload) -> None:
        try:
            kind, msg = messages.parse_payload(payload)
        except messages.ProtocolError as exc:
            await self._error(0, messages.E_BAD_REQUEST, str(exc))
            return
        if kind != "msg":
            await self._error(0, messages.E_BAD_REQUEST, "a device takes no data chunks")
            return
        handler = self._handlers.get(msg["t"])
        if handler is None:
            await self._error(msg["rid"], messages.E_BAD_REQUEST, "%s is not a request" % msg["t"])
            return
        try:
            await handler(msg)
        except OSError as exc:
            await self._error(msg["rid"], messages.E_INTERNAL, "storage: %s" % exc)

    # -- requests ---------------------------------------------------------------------------
    async def _hello(self, msg) -> None:
        self._log("docked by %s" % msg["dock"])
        await self.send(messages.make(
            "identify",
            rid=msg["rid"],
            proto=messages.PROTOCOL_VERSION,
            device_id=self.hal.device_id,
            fw=FIRMWARE_VERSION,
            public_key=self.key.public,
            key_id=self.key.kid,
            limits={"chunk": self.link.tx_room - messages.DATA_HEADER_SIZE, "max_read": MAX_READ},
        ))

    async def _status(self, msg) -> None:
        hal = self.hal
        free, total = hal.storage.usage()
        await self.send(messages.make(
            "status",
            rid=msg["rid"],
            battery_main=battery_state(hal.battery_main),
            battery_backup=battery_state(hal.battery_backup),
            storage={"free": free, "total": total},
            clock=self.clock.describe(),
            health={"faults": hal.selftest()},
            pending=len(self.store.pending()),
            policy=self.policies.name if self.policies else "",
            recording=bool(self.recorder and (self.recorder.recording or self.recorder.busy)),
        ))

    async def _ping(self, msg) -> None:
        t2 = self.clock.now_us()
        # t3 is taken as late as possible: just before the reply is encoded.
        await self.send(messages.make("pong", rid=msg["rid"], t1=msg["t1"], t2=t2,
                                      t3=self.clock.now_us()))

    async def _clock_adjust(self, msg) -> None:
        before, after = self.clock.adjust(msg["delta_us"], msg["uncertainty_us"])
        self._log("clock stepped by %d us" % msg["delta_us"])
        await self.send(messages.make("clock_set", rid=msg["rid"], before_us=before,
                                      after_us=after))

    async def _list(self, msg) -> None:
        limit = max(1, min(msg["limit"], _LIST_LIMIT))
        seqs = [s for s in self.store.pending() if s >= msg["from_seq"]]
        items = []
        size = 0
        for seq in seqs[:limit]:
            record = self.store.read_record(seq)
            items.append({"seq": seq, "record": record, "stored": self.store.data_size(seq)})
            size += len(record)
            if size >= _LIST_BYTES:
                break
        await self.send(messages.make("records", rid=msg["rid"], items=items,
                                      more=len(seqs) > len(items)))

    async def _read(self, msg) -> None:
        seq, offset, length = msg["seq"], msg["offset"], msg["length"]
        if offset < 0 or length < 0 or length > MAX_READ:
            await self._error(msg["rid"], messages.E_BAD_REQUEST, "read range out of bounds")
            return
        try:
            f = self.store.open_data(seq)
        except OSError:
            await self._error(msg["rid"], messages.E_UNKNOWN_RECORD, "no data for record %d" % seq)
            return
        link = self.link
        tx = link.tx
        mv = memoryview(tx)
        head = link.TX_AT
        data_at = head + messages.DATA_HEADER_SIZE
        room = link.tx_room - messages.DATA_HEADER_SIZE
        sent = 0
        with f:
            f.seek(offset)
            while sent < length:
                n = f.readinto(mv[data_at:data_at + min(room, length - sent)])
                if not n:
                    break  # end of the segment
                messages.pack_data_header(tx, head, seq, offset + sent)
                await link.send_tx(messages.DATA_HEADER_SIZE + n)
                sent += n
        await self.send(messages.make("read_done", rid=msg["rid"], seq=seq, offset=offset,
                                      length=sent))

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

    async def _release(self, msg) -> None:
        seq = msg["seq"]
        try:
            record = self.store.read_record(seq)
        except OSError:
            await self._error(msg["rid"], messages.E_UNKNOWN_RECORD, "record %d is not here" % seq)
            return
        # The dock proves it holds this exact record; anything else frees nothing.
        if record_hash(record) != msg["manifest_sha256"]:
            await self._error(msg["rid"], messages.E_MISMATCH, "record %d hash differs" % seq)
            return
        self.store.release(seq)
        self._log("released record %d" % seq)
        await self.send(messages.make("released", rid=msg["rid"], seq=seq))
