"""The dock link as the dock server sees it: payloads in, payloads out (asyncio).

`FramedLink` carries payloads as frames on a byte stream: a UART, a USB-CDC port, or a pty in
simulation. Another link (MQTT) offers the same four members:

    await receive() -> payload (bytes)
    tx, TX_AT, tx_room   a preallocated buffer; a payload of up to tx_room bytes is built
                         at tx[TX_AT:]
    await send_tx(n)     send the n-byte payload built in tx
    await send(payload)

so the server can stream segment data from one buffer with no copy per chunk.
"""

import asyncio

from protocol import framing, messages
from protocol.compat import const

CHUNK_SIZE = const(32768)  # segment bytes per data payload
MAX_REQUEST = const(4096)  # requests are small; a longer frame is noise or an attack
_RX_SIZE = const(4096)


class FramedLink:
    TX_AT = framing.HEADER_SIZE

    def __init__(self, stream, log) -> None:
        self._reader = asyncio.StreamReader(stream)
        self._writer = asyncio.StreamWriter(stream, {})
        self._decoder = framing.FrameDecoder(max_payload=MAX_REQUEST)
        self._rx = bytearray(_RX_SIZE)
        self.tx = bytearray(framing.OVERHEAD + messages.DATA_HEADER_SIZE + CHUNK_SIZE)
        self.tx_room = len(self.tx) - framing.OVERHEAD
        self._head = bytearray(framing.HEADER_SIZE)
        self._tail = bytearray(framing.TRAILER_SIZE)
        self._log = log

    async def receive(self):
        rx = memoryview(self._rx)
        while True:
            payload = self._decoder.next_frame()
            if payload is not None:
                return payload
            noise = self._decoder.take_noise()
            if noise:
                self._log("link: skipped %d bytes of noise" % len(noise))
            n = await self._reader.readinto(self._rx)
            if n:
                self._decoder.receive_data(rx[:n])
            else:
                # Readable but empty: the far end hung up (a pty with no dock). Wait for it
                # to come back instead of spinning.
                await asyncio.sleep_ms(100)

    async def send_tx(self, n: int) -> None:
        size = framing.frame_into(self.tx, n)
        self._writer.write(memoryview(self.tx)[:size])
        await self._writer.drain()

    async def send(self, payload) -> None:
        # Header, payload, trailer written in place: no framed copy of the payload.
        framing.header_into(self._head, len(payload))
        framing.trailer_into(self._tail, 0, payload)
        self._writer.write(self._head)
        self._writer.write(payload)
        self._writer.write(self._tail)
        await self._writer.drain()
