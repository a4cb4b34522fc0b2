"""The dock link as the dock server sees it: payloads in, payloads out (asyncio).

`FramedLink` carries payloads as frames on a byte stream: a UART, a USB-CDC port, or a pty in
simulation. Another link (MQTT) offers the same members:

    await receive() -> payload (bytes)
    await send(payload)
    await send_data(kind, seq, offset, f, n)
                one chunk payload (protocol/messages.py: its header, then n bytes read from
                the file f at its position; the file holds them)
    CHUNK       the most data bytes one chunk carries (the dock is told, and asks for no more)

A chunk is never whole in the heap: the link reads it from the file in pieces into one small
buffer and writes each piece as it comes (the frame's CRC-32 computed as they go), so a
32 KiB chunk on the wire costs 4 KiB of RAM, and the bytes on the wire are those of one
32 KiB payload.
"""

import asyncio
import struct
from binascii import crc32

from protocol import framing, messages
from protocol.compat import const

CHUNK_SIZE = const(32768)  # segment bytes per data payload
MAX_REQUEST = const(4096)  # requests are small; a longer frame is noise or an attack
PIECE = const(4096)  # bytes of a chunk read and written at a time
_EIO = const(5)


class FramedLink:
    CHUNK = CHUNK_SIZE

    def __init__(self, stream, log) -> None:
        self._reader = asyncio.StreamReader(stream)
        self._writer = asyncio.StreamWriter(stream, {})
        self._decoder = framing.FrameDecoder(max_payload=MAX_REQUEST)
        # The link's one buffer: what `receive` reads from the line, and the pieces of a chunk
        # `send_data` writes. The server handles one request at a time, between receives, and
        # the decoder copies what it is given, so the two never overlap.
        self._buf = bytearray(PIECE)
        self._head = bytearray(framing.HEADER_SIZE + messages.DATA_HEADER_SIZE)
        self._tail = bytearray(framing.TRAILER_SIZE)
        self._log = log

    async def receive(self):
        rx = memoryview(self._buf)
        while True:
            payload = self._decoder.next_frame()
            if payload is not None:
                return payload
            noise = self._decoder.take_noise()
            if noise:
                self._log("link: skipped %d bytes of noise" % len(noise))
            n = await self._reader.readinto(self._buf)
            if n:
                self._decoder.receive_data(rx[:n])
            else:
                # Readable but empty: the far end hung up (a pty with no dock). Wait for it
                # to come back instead of spinning.
                await asyncio.sleep_ms(100)

    async def send_data(self, kind: int, seq: int, offset: int, f, n: int) -> None:
        head = self._head
        framing.header_into(head, messages.DATA_HEADER_SIZE + n)
        messages.pack_data_header(head, framing.HEADER_SIZE, seq, offset, kind)
        crc = crc32(memoryview(head)[framing.HEADER_SIZE:])
        writer = self._writer
        writer.write(head)
        mv = memoryview(self._buf)
        while n > 0:
            got = f.readinto(mv[:min(n, PIECE)])
            if not got:  # the frame announced more than the file holds: never sent whole
                raise OSError(_EIO)
            piece = mv[:got]
            crc = crc32(piece, crc)
            writer.write(piece)  # copied only if the line took part of it
            if writer.out_buf:  # type: ignore[attr-defined]
                await writer.drain()  # ... so that no more than a piece is ever copied
            n -= got
        struct.pack_into("<I", self._tail, 0, crc)
        writer.write(self._tail)
        await writer.drain()

    async def send(self, payload) -> None:
        # Header, payload, trailer written in place: no framed copy of the payload.
        framing.header_into(self._head, len(payload))
        framing.trailer_into(self._tail, 0, payload)
        self._writer.write(memoryview(self._head)[:framing.HEADER_SIZE])
        self._writer.write(payload)
        self._writer.write(self._tail)
        await self._writer.drain()
