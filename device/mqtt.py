"""MQTT 3.1.1 for the recorder: a packet codec and a small asyncio client (MicroPython).

Only what a recorder needs: CONNECT (with a last will, optional user/password), SUBSCRIBE,
PUBLISH both ways (QoS 0 out; QoS 0 or 1 in, PUBACK answered), PINGREQ, DISCONNECT.

The codec is sans-IO: `PacketReader` takes bytes read straight into its preallocated buffer
and yields whole packets as (first byte, body view); `pack_publish_header` writes a PUBLISH
header so that it ends exactly where a payload already sits in a buffer, so a 32 KiB data
chunk goes out in one write of one memoryview, never copied. Lengths read from the wire are
bounded: a packet longer than the reader's buffer is skipped (counted), never buffered.

`MqttClient` owns one TCP connection (TCP_NODELAY: Nagle held 32 KiB publishes to ~1 MB/s).
Writes go straight to the non-blocking socket; only when the socket is full is the rest handed
to the asyncio stream as a view, to be written as the socket drains.

TLS (`tls_context`, the `tls` module: mbedTLS): the socket is wrapped non-blocking with
`do_handshake_on_connect=False`, so the handshake runs inside the first write (CONNECT) and the
reads after it, while asyncio waits on the socket; nothing blocks the event loop but the
handshake's own arithmetic. mbedTLS may hold decrypted bytes the kernel socket no longer shows
as readable, so every read first tries the socket directly and only then waits on it. This
port's mbedTLS parses DER only: PEM files are converted here. The server certificate is
verified against the CA, and its name against `server_hostname` (default: the host).
"""

import asyncio
import errno
import socket
import struct
import time

from protocol.compat import const

_CONNECT = const(0x10)
_CONNACK = const(0x20)
PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)  # the spec fixes SUBSCRIBE's flags to 0b0010
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)
_PINGREQ_PACKET = b"\xc0\x00"
_DISCONNECT_PACKET = b"\xe0\x00"

_MAX_REMAINING = const(268435455)  # the largest length a 4-byte varint can say
PUBLISH_HEAD_MAX = const(7)  # fixed header (1 + 4-byte length) + topic length (2), QoS 0
_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)
_INBOX_MAX = const(8)  # received publishes waiting for the caller; more are dropped


class MqttError(Exception):
    """The connection cannot go on: the broker refused, misbehaved, closed or went silent."""


# -- TLS ----------------------------------------------------------------------------------------
def der(data) -> bytes:
    """The DER bytes of a certificate or key given as DER or as PEM (the first PEM block)."""
    if data[:5] != b"-----":
        return bytes(data)
    from binascii import a2b_base64

    lines = bytes(data).split(b"\n")
    body = []  # type: list[bytes]
    for line in lines[1:]:
        line = line.strip()
        if line.startswith(b"-----"):
            return a2b_base64(b"".join(body))
        if line and b":" not in line:  # skip RFC 1421 headers (Proc-Type: ...)
            body.append(line)
    raise ValueError("PEM block without an END line")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return der(f.read())


def tls_context(ca: str, cert: str = "", key: str = ""):
    """A TLS client context: the broker verified against the CA file, our cert+key if given.

    Files may be PEM or DER. Their bytes are dropped once mbedTLS has parsed them.
    """
    import tls

    ctx = tls.SSLContext(tls.PROTOCOL_TLS_CLIENT)  # verify_mode is CERT_REQUIRED for a client
    ctx.load_verify_locations(_read(ca))
    if cert or key:
        if not (cert and key):
            raise ValueError("a client certificate needs both the certificate and its key")
        ctx.load_cert_chain(_read(cert), _read(key))
    return ctx


# -- codec --------------------------------------------------------------------------------------
def pack_varint(buf, at: int, n: int) -> int:
    """Write the remaining-length varint `n` at buf[at]; return the index after it."""
    if n < 0 or n > _MAX_REMAINING:
        raise ValueError("MQTT length %d out of range" % n)
    while n > 127:
        buf[at] = (n & 0x7F) | 0x80
        n >>= 7
        at += 1
    buf[at] = n
    return at + 1


def _utf8(value) -> bytes:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if len(raw) > 65535:
        raise ValueError("MQTT string longer than 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def pack_publish_header(buf, end: int, topic, payload_len: int, retain: bool = False) -> int:
    """Write a QoS 0 PUBLISH header into buf so that it ends at `end`, where the payload is.

    Returns the index the packet starts at: the packet is buf[start:end + payload_len].
    """
    tlen = len(topic)
    rest = 2 + tlen + payload_len
    size = 1 if rest < 0x80 else 2 if rest < 0x4000 else 3 if rest < 0x200000 else 4
    start = end - 3 - size - tlen
    if start < 0:
        raise ValueError("no room for the PUBLISH header in front of the payload")
    buf[start] = PUBLISH | (1 if retain else 0)
    at = pack_varint(buf, start + 1, rest)
    struct.pack_into("!H", buf, at, tlen)
    buf[at + 2:end] = topic
    return start


def _packet(first: int, body) -> bytes:
    head = bytearray(5)
    head[0] = first
    return bytes(head[:pack_varint(head, 1, len(body))]) + body


def connect_packet(client_id: str, keepalive_s: int, will_topic=None, will_message=b"",
                   will_retain: bool = False, will_qos: int = 0, user=None, password=None,
                   clean: bool = True) -> bytes:
    """A whole CONNECT packet (allocating: it is sent once per connection)."""
    if not 0 <= keepalive_s <= 65535 or not 0 <= will_qos <= 1:
        raise ValueError("keepalive or will QoS out of range")
    flags = 0x02 if clean else 0
    payload = _utf8(client_id)
    if will_topic is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        payload += _utf8(will_topic) + _utf8(will_message)
    if user is not None:
        flags |= 0x80
        payload += _utf8(user)
        if password is not None:
            flags |= 0x40
            payload += _utf8(password)
    return _packet(_CONNECT, b"\x00\x04MQTT\x04" + struct.pack("!BH", flags, keepalive_s)
                   + payload)


def subscribe_packet(pid: int, topic, qos: int) -> bytes:
    return _packet(_SUBSCRIBE, struct.pack("!H", pid) + _utf8(topic) + bytes((qos,)))


def parse_publish(first: int, body):
    """(topic view, qos, packet id, payload view) of a PUBLISH body."""
    qos = (first >> 1) & 3
    if qos > 2 or len(body) < 2:
        raise MqttError("malformed PUBLISH")
    tlen = (body[0] << 8) | body[1]
    at = 2 + tlen + (2 if qos else 0)
    if at > len(body):
        raise MqttError("PUBLISH topic longer than the packet")
    pid = (body[at - 2] << 8) | body[at - 1] if qos else 0
    return body[2:2 + tlen], qos, pid, body[at:]


class PacketReader:
    """Whole packets out of a byte stream, in one preallocated buffer.

    Read into `space()`, report it with `advance(n)`, then take packets with `next()` until
    it returns None. A packet's body view is valid until the next `space()` call.
    """

    def __init__(self, size: int) -> None:
        self.buf = bytearray(size)
        self._mv = memoryview(self.buf)
        self._start = 0
        self._end = 0
        self._skip = 0  # bytes of an oversized packet still to drop
        self.skipped = 0  # oversized packets dropped

    def space(self):
        if self._start:
            n = self._end - self._start
            self._mv[:n] = self._mv[self._start:self._end]
            self._start, self._end = 0, n
        return self._mv[self._end:]

    def advance(self, n: int) -> None:
        self._end += n

    def next(self):
        """The next whole packet as (first byte, body view), or None until more bytes come."""
        buf = self.buf
        if self._skip:
            drop = min(self._skip, self._end - self._start)
            self._skip -= drop
            self._start += drop
            if self._skip:
                return None
        start, end = self._start, self._end
        i = start + 1
        value = 0
        shift = 0
        while True:
            if i >= end:
                return None
            byte = buf[i]
            value |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MqttError("malformed remaining length")
        total = i - start + value
        if total > len(buf):
            self._skip = total
            self.skipped += 1
            return self.next()
        if end - start < total:
            return None
        self._start = start + total
        if self._start == self._end:
            self._start = self._end = 0
        return buf[start], self._mv[i:start + total]


class MqttClient:
    """One connection to a broker: connect, subscribe, publish, wait for messages.

    Any method may raise OSError or MqttError when the connection is lost; the owner then
    calls `close()` and connects again (device/mqtt_link.py does, with backoff).
    """

    def __init__(self, host: str, port: int, client_id: str, log, *, keepalive_s: int = 30,
                 rx_size: int = 4608, user=None, password=None, tls=None,
                 server_hostname=None) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.user = user
        self.password = password
        self.tls = tls  # an SSLContext (tls_context()), or None for plain TCP
        self.server_hostname = server_hostname or host
        self.connect_ms = 0  # the last connect: TCP + TLS handshake + CONNECT/CONNACK
        self._log = log
        self._reader = PacketReader(rx_size)
        self._sock = None  # type: socket.socket | None
        self._stream = None  # type: asyncio.StreamWriter | None
        self._rx_stream = None  # type: asyncio.StreamReader | None  # same socket, read side
        self._pid = 0
        self._ping_sent = False
        self.inbox = []  # type: list[bytes]  # received publishes' payloads, oldest first
        self.dropped = 0

    @property
    def connected(self) -> bool:
        return self._sock is not None

    async def connect(self, will_topic=None, will_message=b"", timeout_ms: int = 5000) -> None:
        t0 = time.ticks_ms()
        addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0][-1]
        sock = socket.socket()
        sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        sock.setblocking(False)
        try:
            sock.connect(addr)
        except OSError as exc:
            if exc.errno != errno.EINPROGRESS:  # the port's own (Linux 115, ESP32 119)
                sock.close()
                raise
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_hostname=self.server_hostname,
                                            do_handshake_on_connect=False)
            except BaseException:
                sock.close()
                raise
            sock.setblocking(False)
        self._sock = sock
        self._stream = asyncio.StreamWriter(sock, {})
        self._rx_stream = asyncio.StreamReader(sock)
        reader = self._reader
        reader._start = reader._end = reader._skip = 0
        self._ping_sent = False
        self.inbox.clear()
        # The first write waits for the socket to become writable: the TCP connect completes.
        # Over TLS it runs the handshake, whose verdict on the broker's certificate mbedTLS
        # gives as a ValueError ("not correctly signed by the trusted CA", ...).
        try:
            await self.write(connect_packet(self.client_id, self.keepalive_s, will_topic,
                                            will_message, True, 1, self.user, self.password))
            first, body = await asyncio.wait_for_ms(  # type: int, memoryview
                self._next_packet(), timeout_ms)
        except ValueError as exc:
            raise MqttError("TLS: %s" % (str(exc).strip(),))
        if first != _CONNACK or len(body) != 2:
            raise MqttError("expected CONNACK, got packet type 0x%02x" % first)
        if body[1]:  # 4: bad user name or password, 5: not authorised
            raise MqttError("broker refused the connection: CONNACK code %d" % body[1])
        self.connect_ms = time.ticks_diff(time.ticks_ms(), t0)

    async def subscribe(self, topic, qos: int = 0, timeout_ms: int = 5000) -> None:
        pid = self._next_pid()
        await self.write(subscribe_packet(pid, topic, qos))
        while True:
            first, body = await asyncio.wait_for_ms(  # type: int, memoryview
                self._next_packet(), timeout_ms)
            if first == _SUBACK:
                if len(body) != 3 or ((body[0] << 8) | body[1]) != pid:
                    raise MqttError("SUBACK for another request")
                if body[2] & 0x80:
                    raise MqttError("broker refused the subscription to %r" % (topic,))
                return
            await self._dispatch(first, body)

    async def publish(self, topic, payload, retain: bool = False) -> None:
        """Publish a small message at QoS 0 (allocates its header)."""
        head = bytearray(PUBLISH_HEAD_MAX + len(topic))
        start = pack_publish_header(head, len(head), topic, len(payload), retain)
        await self.write(memoryview(head)[start:])
        await self.write(payload)

    async def write(self, data) -> None:
        """Write all of `data` (bytes or a view) without copying it."""
        sock = self._sock
        if sock is None:
            raise MqttError("not connected")
        n = sock.write(data)  # the socket is non-blocking: None when it is full
        if n is not None and n == len(data):
            return
        stream = self._stream
        if stream is None:
            raise MqttError("not connected")
        # Stream.write would copy the rest into a new bytes object; Stream.drain writes its
        # out_buf as a memoryview each time the socket becomes writable, so hand it the view.
        stream.out_buf = memoryview(data)[n or 0:]  # type: ignore[attr-defined]
        await stream.drain()

    async def wait_msg(self):
        """The payload (bytes) of the next message published to us; pings while it waits.

        Raises MqttError when the broker closes the connection or stays silent for a whole
        keepalive period after a PINGREQ.
        """
        while True:
            if self.inbox:
                return self.inbox.pop(0)
            first, body = await self._next_packet(True)
            await self._dispatch(first, body)

    def close(self) -> None:
        sock = self._sock
        self._sock = None
        self._stream = self._rx_stream = None
        if sock is not None:
            try:
                sock.write(_DISCONNECT_PACKET)
            except OSError:
                pass  # already gone: nothing to say goodbye on
            sock.close()

    # -- internals --------------------------------------------------------------------------
    def _next_pid(self) -> int:
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def _next_packet(self, keepalive: bool = False) -> tuple[int, memoryview]:
        reader = self._reader
        half_ms = self.keepalive_s * 500
        while True:
            packet = reader.next()
            if packet is not None:
                if reader.skipped:
                    self._log("mqtt: dropped %d oversized packets" % reader.skipped)
                    reader.skipped = 0
                return packet
            sock, stream = self._sock, self._rx_stream
            if sock is None or stream is None:
                raise MqttError("not connected")
            # Bytes already decrypted inside TLS do not make the socket readable: take what is
            # there first (non-blocking: None when nothing is), and only then wait.
            got = sock.readinto(reader.space())
            if got:
                self._ping_sent = False
                reader.advance(got)
                continue
            if got is not None:
                raise MqttError("broker closed the connection")
            if keepalive and half_ms:
                try:
                    n = await asyncio.wait_for_ms(  # type: int | None
                        stream.readinto(reader.space()), half_ms)
                except asyncio.TimeoutError:  # noqa: UP041  (MicroPython has no builtin one)
                    if self._ping_sent:
                        raise MqttError("broker silent for %d s" % self.keepalive_s)
                    self._ping_sent = True
                    await self.write(_PINGREQ_PACKET)
                    continue
            else:
                n = await stream.readinto(reader.space())
            if n is None:
                continue  # woken without data
            if not n:
                raise MqttError("broker closed the connection")
            self._ping_sent = False
            reader.advance(n)

    async def _dispatch(self, first: int, body) -> None:
        kind = first & 0xF0
        if kind == PUBLISH:
            _topic, qos, pid, payload = parse_publish(first, body)
            if len(self.inbox) < _INBOX_MAX:
                self.inbox.append(bytes(payload))
            else:
                self.dropped += 1
            if qos == 1:
                await self.write(struct.pack("!BBH", _PUBACK, 2, pid))
            elif qos:
                raise MqttError("QoS 2 PUBLISH on a QoS 1 subscription")
        elif kind in (_PUBACK, _PINGRESP, _SUBACK):
            pass
        else:
            raise MqttError("unexpected packet type 0x%02x" % first)
