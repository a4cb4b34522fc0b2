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

Heap: one transmit buffer for the life of the link. A data chunk is read into it at TX_AT, the
dock server writes the chunk header in front, and send_tx writes the PUBLISH header and topic
in front of that, in the room TX_AT reserves: one memoryview goes to the socket, no copy.

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
from device.link import CHUNK_SIZE, MAX_REQUEST
from protocol import messages
from protocol.compat import const

_HEAD_ROOM = const(128)  # bytes in front of a payload for the PUBLISH header and topic
_BACKOFF_MIN_MS = const(100)
_BACKOFF_MAX_MS = const(8000)
_CONNECT_TIMEOUT_MS = const(10000)
KEEPALIVE_S = const(30)


class MqttLink:
    TX_AT = _HEAD_ROOM

    def __init__(self, host: str, port: int, device_id: str, log, *, user=None,
                 password=None, tls=None, server_hostname=None,
                 keepalive_s: int = KEEPALIVE_S) -> None:
        base = "bodycam/%s/" % device_id
        if "+" in device_id or "#" in device_id or "/" in device_id or not device_id:
            raise ValueError("device id %r cannot name an MQTT topic" % device_id)
        self.topic_h2d = (base + "h2d").encode()
        self.topic_d2h = (base + "d2h").encode()
        self.topic_status = (base + "status").encode()
        if mqtt.PUBLISH_HEAD_MAX + len(self.topic_d2h) > _HEAD_ROOM:
            raise ValueError("device id %r is too long for the header room" % device_id)
        self.tx = bytearray(_HEAD_ROOM + messages.DATA_HEADER_SIZE + CHUNK_SIZE)
        self.tx_room = messages.DATA_HEADER_SIZE + CHUNK_SIZE
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

    async def send_tx(self, n: int) -> None:
        client = self._client
        if not client.connected:
            return  # the dock re-requests from its last good byte once we are back
        start = mqtt.pack_publish_header(self.tx, _HEAD_ROOM, self.topic_d2h, n)
        try:
            await client.write(memoryview(self.tx)[start:_HEAD_ROOM + n])
        except (OSError, mqtt.MqttError) as exc:
            self._lost(exc)

    async def send(self, payload) -> None:
        n = len(payload)
        if n <= self.tx_room:
            # Small messages go through the same buffer: one write, no header allocation.
            self.tx[_HEAD_ROOM:_HEAD_ROOM + n] = payload
            await self.send_tx(n)
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
