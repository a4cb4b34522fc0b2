"""The dock link over MQTT: the members device/link.py documents, on per-device topics.

    bodycam/<device id>/h2d     dock -> device requests (the device subscribes)
    bodycam/<device id>/d2h     device -> dock answers and data chunks
    bodycam/<device id>/status  "online" (retained) after each connect; "offline" (retained)
                                is the last will, published by the broker if the device vanishes

One protocol payload (protocol/messages.py) per MQTT message, exactly as on serial.

QoS: the device publishes at QoS 0 and relies on the end-to-end resume, for these reasons.
A PUBACK only proves the broker took the message: a broker restart (persistence off), a broker
that drops a slow subscriber's queue or a dock that reconnects loses messages all the same, so
the dock has to detect loss end to end anyway. It does: its windowed `read` requests name the
last good offset, act as cumulative acks and rewind to the first missing byte on a gap or a
stall (host_agent/dock/session.py), and the device frees a segment only on a `release` that names
the record hash the vault committed (device/dock.py). QoS 1 on top would cost either a 32 KiB
buffer per unacknowledged chunk (to retransmit it) or a stop-and-wait per chunk, on a heap of
a few hundred KiB, to buy nothing end to end. Requests come in on a QoS 1 subscription (they
are tiny; the PUBACK is cheap); the dock publishes them at QoS 1.

Heap: one small transmit buffer for the life of the link (device/link.py). A data chunk goes
out as one PUBLISH written in pieces: its header, topic and chunk header in front of the first
piece of data read from the file, then each further piece read into the same place; each
write is a memoryview handed to the socket, never copied. Small messages are copied into the
buffer and sent in one write.

TLS and credentials: `tls` is a context from mqtt.tls_context (CA, client certificate and key;
host_agent/deploy/mosquitto/README.md), `user`/`password` go in CONNECT. A refusal (bad certificate,
CONNACK 4/5) is retried with the same backoff as a lost broker.

The connection is made (and remade) inside receive(): a lost connection makes sends no-ops
until then (the dock re-requests what it missed), and reconnects back off exponentially with
jitter, so a fleet does not hammer a broker that has just restarted.
"""

import asyncio
import random

from device import mqtt
from device.link import CHUNK_SIZE, MAX_REQUEST, PIECE
from protocol import messages
from protocol.compat import const

_DATA_AT = const(128)  # bytes in front of a chunk header for the PUBLISH header and topic
_HEAD_ROOM = const(141)  # _DATA_AT + messages.DATA_HEADER_SIZE: where a chunk's data goes
_EIO = const(5)
_BACKOFF_MIN_MS = const(100)
_BACKOFF_MAX_MS = const(8000)
_CONNECT_TIMEOUT_MS = const(10000)
KEEPALIVE_S = const(30)


class MqttLink:
    CHUNK = CHUNK_SIZE

    def __init__(self, host: str, port: int, device_id: str, log, *, user=None,
                 password=None, tls=None, server_hostname=None,
                 keepalive_s: int = KEEPALIVE_S) -> None:
        base = "bodycam/%s/" % device_id
        if "+" in device_id or "#" in device_id or "/" in device_id or not device_id:
            raise ValueError("device id %r cannot name an MQTT topic" % device_id)
        self.topic_h2d = (base + "h2d").encode()
        self.topic_d2h = (base + "d2h").encode()
        self.topic_status = (base + "status").encode()
        if mqtt.PUBLISH_HEAD_MAX + len(self.topic_d2h) > _DATA_AT:
            raise ValueError("device id %r is too long for the header room" % device_id)
        self._tx = bytearray(_HEAD_ROOM + PIECE)
        self._log = log
        # Requests are small: a publish to us longer than this (+ topic) is skipped unread.
        self._client = mqtt.MqttClient(host, port, "bodycam-" + device_id, log,
                                       keepalive_s=keepalive_s, rx_size=MAX_REQUEST + 512,
                                       user=user, password=password, tls=tls,
                                       server_hostname=server_hostname)
        self._backoff_ms = _BACKOFF_MIN_MS
        self.connects = 0

    async def receive(self):
        client = self._client
        while True:
            if not client.connected:
                await self._connect()
                continue
            try:
                return await client.wait_msg()
            except (OSError, mqtt.MqttError) as exc:
                self._lost(exc)

    async def send_data(self, kind: int, seq: int, offset: int, f, n: int) -> None:
        client = self._client
        if not client.connected:
            return  # the dock re-requests from its last good byte once we are back
        tx = self._tx
        mv = memoryview(tx)
        start = mqtt.pack_publish_header(tx, _DATA_AT, self.topic_d2h,
                                         messages.DATA_HEADER_SIZE + n)
        messages.pack_data_header(tx, _DATA_AT, seq, offset, kind)
        try:
            while n > 0:
                got = f.readinto(mv[_HEAD_ROOM:_HEAD_ROOM + min(n, PIECE)])
                if not got:  # the PUBLISH announced more than the file holds
                    raise OSError(_EIO)
                await client.write(mv[start:_HEAD_ROOM + got])
                start = _HEAD_ROOM
                n -= got
        except (OSError, mqtt.MqttError) as exc:
            self._lost(exc)  # a PUBLISH cut short: the connection cannot go on

    async def send(self, payload) -> None:
        n = len(payload)
        if n <= PIECE:
            # Small messages go through the same buffer: one write, no header allocation.
            if not self._client.connected:
                return
            tx = self._tx
            tx[_HEAD_ROOM:_HEAD_ROOM + n] = payload
            start = mqtt.pack_publish_header(tx, _HEAD_ROOM, self.topic_d2h, n)
            try:
                await self._client.write(memoryview(tx)[start:_HEAD_ROOM + n])
            except (OSError, mqtt.MqttError) as exc:
                self._lost(exc)
            return
        if not self._client.connected:
            return
        try:
            await self._client.publish(self.topic_d2h, payload)
        except (OSError, mqtt.MqttError) as exc:
            self._lost(exc)

    # -- connection ------------------------------------------------------------------------
    def _lost(self, exc) -> None:
        self._log("mqtt: connection lost: %r" % (exc,))
        self._client.close()

    async def _connect(self) -> None:
        client = self._client
        try:
            await asyncio.wait_for_ms(self._handshake(), _CONNECT_TIMEOUT_MS)
        # MicroPython has no builtin TimeoutError: only asyncio.TimeoutError.
        except (OSError, mqtt.MqttError, asyncio.TimeoutError) as exc:  # noqa: UP041
            client.close()
            # Exponential backoff with "equal jitter": half the delay fixed, half random.
            delay = self._backoff_ms
            self._backoff_ms = min(_BACKOFF_MAX_MS, delay * 2)
            wait = delay // 2 + random.getrandbits(16) % (delay // 2 + 1)
            self._log("mqtt: cannot connect to %s:%d (%r); retrying in %d ms" % (
                client.host, client.port, exc, wait))
            await asyncio.sleep_ms(wait)
            return
        self._backoff_ms = _BACKOFF_MIN_MS
        self.connects += 1
        self._log("mqtt: connected to %s:%d%s in %d ms (connection %d)" % (
            client.host, client.port, " over TLS" if client.tls else "", client.connect_ms,
            self.connects))

    async def _handshake(self) -> None:
        client = self._client
        await client.connect(self.topic_status, b"offline")
        await client.subscribe(self.topic_h2d, 1)
        await client.publish(self.topic_status, b"online", retain=True)
