"""The dock protocol server: reads frames from the link, answers, streams segment data.

One request is handled at a time, in arrival order. Data for a `read` is sent straight from
one preallocated frame buffer: the file is read into the frame's payload area, the header and
CRCs are written around it in place, and the frame goes out. A `read_done` message closes each
read so the dock knows the window is complete.
"""

from device import FIRMWARE_VERSION
from protocol import framing, messages
from protocol.manifest import record_hash

try:
    from micropython import const
except ImportError:

    def const(x):  # type: ignore[no-redef,misc]
        return x


CHUNK_SIZE = const(32768)
MAX_READ = const(16 * 1024 * 1024)
_LIST_LIMIT = const(64)
_RX_SIZE = const(4096)
_MAX_REQUEST = const(4096)  # requests are small; a bigger frame is rejected early


class DockServer:
    def __init__(self, hal, store, key, clock, log) -> None:
        self.hal = hal
        self.store = store
        self.key = key
        self.clock = clock
        self._log = log
        self._decoder = framing.FrameDecoder(max_payload=_MAX_REQUEST)
        self._rx = bytearray(_RX_SIZE)
        # Frame buffer: header | data header | chunk | trailer.
        self._tx = bytearray(framing.OVERHEAD + messages.DATA_HEADER_SIZE + CHUNK_SIZE)
        self._handlers = {
            "hello": self._hello,
            "get_status": self._status,
            "ping": self._ping,
            "clock_adjust": self._clock_adjust,
            "list": self._list,
            "read": self._read,
            "release": self._release,
        }

    # -- I/O loop -------------------------------------------------------------------------
    def poll(self, timeout_ms: int) -> bool:
        """Handle whatever arrives within `timeout_ms`; True if anything was handled."""
        link = self.hal.link
        if not link.wait(timeout_ms):
            return False
        n = link.readinto(self._rx)
        if not n:
            return False
        self._decoder.receive_data(memoryview(self._rx)[:n])
        while True:
            payload = self._decoder.next_frame()
            if payload is None:
                break
            self._dispatch(payload)
        noise = self._decoder.take_noise()
        if noise:
            self._log("link: skipped %d bytes of noise" % len(noise))
        return True

    def serve_forever(self) -> None:
        while True:
            self.poll(1000)

    def send(self, msg) -> None:
        self.hal.link.write(framing.encode_frame(messages.encode_message(msg)))

    def _error(self, rid: int, code: str, detail: str) -> None:
        self._log("error to dock: %s %s" % (code, detail))
        self.send(messages.make("error", rid=rid, code=code, detail=detail))

    def _dispatch(self, payload) -> None:
        try:
            kind, msg = messages.parse_payload(payload)
        except messages.ProtocolError as exc:
            self._error(0, messages.E_BAD_REQUEST, str(exc))
            return
        if kind != "msg":
            self._error(0, messages.E_BAD_REQUEST, "a device takes no data chunks")
            return
        handler = self._handlers.get(msg["t"])
        if handler is None:
            self._error(msg["rid"], messages.E_BAD_REQUEST, "%s is not a request" % msg["t"])
            return
        try:
            handler(msg)
        except OSError as exc:
            self._error(msg["rid"], messages.E_INTERNAL, "storage: %s" % exc)

    # -- requests ---------------------------------------------------------------------------
    def _hello(self, msg) -> None:
        self._log("docked by %s" % msg["dock"])
        self.send(messages.make(
            "identify",
            rid=msg["rid"],
            proto=messages.PROTOCOL_VERSION,
            device_id=self.hal.device_id,
            fw=FIRMWARE_VERSION,
            public_key=self.key.public,
            limits={"chunk": CHUNK_SIZE, "max_read": MAX_READ, "max_request": _MAX_REQUEST},
        ))

    def _status(self, msg) -> None:
        hal = self.hal
        free, total = hal.storage.usage()
        self.send(messages.make(
            "status",
            rid=msg["rid"],
            battery_main=_battery(hal.battery_main),
            battery_backup=_battery(hal.battery_backup),
            storage={"free": free, "total": total},
            clock=self.clock.describe(),
            health={"faults": hal.selftest()},
            pending=len(self.store.pending()),
        ))

    def _ping(self, msg) -> None:
        t2 = self.clock.now_us()
        # t3 is taken as late as possible: just before the reply is encoded.
        self.send(messages.make("pong", rid=msg["rid"], t1=msg["t1"], t2=t2,
                                t3=self.clock.now_us()))

    def _clock_adjust(self, msg) -> None:
        before, after = self.clock.adjust(msg["delta_us"], msg["uncertainty_us"])
        self._log("clock stepped by %d us" % msg["delta_us"])
        self.send(messages.make("clock_set", rid=msg["rid"], before_us=before, after_us=after))

    def _list(self, msg) -> None:
        limit = max(1, min(msg["limit"], _LIST_LIMIT))
        seqs = [s for s in self.store.pending() if s >= msg["from_seq"]]
        items = []
        for seq in seqs[:limit]:
            items.append({"seq": seq, "record": self.store.read_record(seq),
                          "stored": self.store.data_size(seq)})
        self.send(messages.make("records", rid=msg["rid"], items=items, more=len(seqs) > limit))

    def _read(self, msg) -> None:
        seq, offset, length = msg["seq"], msg["offset"], msg["length"]
        try:
            f = self.store.open_data(seq)
        except OSError:
            self._error(msg["rid"], messages.E_UNKNOWN_RECORD, "no data for record %d" % seq)
            return
        if offset < 0 or length < 0 or length > MAX_READ:
            f.close()
            self._error(msg["rid"], messages.E_BAD_REQUEST, "read range out of bounds")
            return
        tx = self._tx
        mv = memoryview(tx)
        data_at = framing.HEADER_SIZE + messages.DATA_HEADER_SIZE
        sent = 0
        with f:
            f.seek(offset)
            while sent < length:
                want = min(CHUNK_SIZE, length - sent)
                n = f.readinto(mv[data_at:data_at + want])
                if not n:
                    break  # end of the segment
                messages.pack_data_header(tx, framing.HEADER_SIZE, seq, offset + sent)
                size = framing.frame_into(tx, messages.DATA_HEADER_SIZE + n)
                self.hal.link.write(mv[:size])
                sent += n
        self.send(messages.make("read_done", rid=msg["rid"], seq=seq, offset=offset, length=sent))

    def _release(self, msg) -> None:
        seq = msg["seq"]
        try:
            record = self.store.read_record(seq)
        except OSError:
            self._error(msg["rid"], messages.E_UNKNOWN_RECORD, "record %d is not here" % seq)
            return
        # The dock proves it holds this exact record; anything else frees nothing.
        if record_hash(record) != msg["manifest_sha256"]:
            self._error(msg["rid"], messages.E_MISMATCH, "record %d hash differs" % seq)
            return
        self.store.release(seq)
        self._log("released record %d" % seq)
        self.send(messages.make("released", rid=msg["rid"], seq=seq))


def _battery(cell) -> dict:
    mv, pct, charging = cell.read()
    return {"mv": mv, "pct": pct, "charging": charging}

