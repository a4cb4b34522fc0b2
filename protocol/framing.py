"""Serial framing: length-prefixed frames with CRC-32, resynchronising after garbage.

Wire form of one frame (all integers little-endian):

    magic   2 bytes  b"\\xb0\\xdc"
    length  u32      payload length, at most the decoder's max_payload
    hcrc    u32      CRC-32 of magic+length (so a false magic in noise is rejected at once)
    payload length bytes
    pcrc    u32      CRC-32 of payload

Why not COBS: bulk segment data is most of the traffic; a length prefix lets the device send a
chunk straight from its read buffer (no per-byte stuffing, 14 bytes of overhead per frame),
while the header CRC still lets the reader find the next frame after noise or a dropped byte.
Bytes that are not part of a good frame (boot text, line noise) are counted and kept, bounded,
as `noise` for the log.
"""

import binascii
import struct

from protocol.compat import const

MAGIC = b"\xb0\xdc"
HEADER_SIZE = const(10)
TRAILER_SIZE = const(4)
OVERHEAD = const(14)
DEFAULT_MAX_PAYLOAD = const(65536 + 64)
_NOISE_KEEP = const(1024)


class FramingError(ValueError):
    """A frame that cannot be built (the local side's fault)."""


def header_into(head, payload_len: int) -> None:
    """Write the 10-byte frame header for a payload of `payload_len` into head[0:10]."""
    head[0:2] = MAGIC
    struct.pack_into("<I", head, 2, payload_len)
    struct.pack_into("<I", head, 6, binascii.crc32(memoryview(head)[0:6]))


def trailer_into(tail, at: int, payload) -> None:
    """Write the payload's CRC-32 trailer into tail[at:at+4]."""
    struct.pack_into("<I", tail, at, binascii.crc32(payload))


def frame_into(buf, payload_len: int) -> int:
    """Frame a payload already placed at buf[HEADER_SIZE:HEADER_SIZE+payload_len].

    Writes header and trailer around it in place (no copy of the payload) and returns the frame
    length. `buf` must hold payload_len + OVERHEAD bytes.
    """
    end = HEADER_SIZE + payload_len
    if payload_len < 0 or len(buf) < end + TRAILER_SIZE:
        raise FramingError("buffer too small for a %d-byte payload" % payload_len)
    header_into(buf, payload_len)
    trailer_into(buf, end, memoryview(buf)[HEADER_SIZE:end])
    return end + TRAILER_SIZE


def encode_frame(payload) -> bytes:
    """Return one frame carrying `payload`."""
    n = len(payload)
    buf = bytearray(n + OVERHEAD)
    buf[HEADER_SIZE : HEADER_SIZE + n] = payload
    frame_into(buf, n)
    return bytes(buf)


class FrameDecoder:
    """Bytes in, payloads out. No I/O: feed `receive_data`, then call `next_frame` until None."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed data in _buf
        self.frames = 0
        self.bad_frames = 0  # header or payload CRC failures, oversize lengths
        self.noise_bytes = 0
        self.noise = bytearray()  # the most recent noise, for the log

    def receive_data(self, data) -> None:
        self._buf.extend(data)

    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def _skip(self, n: int) -> None:
        start = self._pos
        self._pos += n
        self.noise_bytes += n
        self.noise.extend(memoryview(self._buf)[start : start + n])
        if len(self.noise) > _NOISE_KEEP:
            self.noise = self.noise[-_NOISE_KEEP:]

    def take_noise(self) -> bytes:
        out = bytes(self.noise)
        self.noise = bytearray()
        return out

    def _compact(self) -> None:
        # Drop consumed bytes once they are a large share of the buffer (amortised O(1)).
        if self._pos and (self._pos > 65536 or self._pos * 2 > len(self._buf)):
            self._buf = self._buf[self._pos :]
            self._pos = 0

    def next_frame(self):
        """Return the next good payload (bytes), or None when more data is needed."""
        buf = self._buf
        while True:
            at = buf.find(MAGIC, self._pos)
            if at < 0:
                # No magic: all is noise but a trailing byte that may begin one.
                keep = 1 if len(buf) > self._pos and buf[-1] == MAGIC[0] else 0
                self._skip(len(buf) - self._pos - keep)
                self._compact()
                return None
            if at > self._pos:
                self._skip(at - self._pos)
            if len(buf) - self._pos < HEADER_SIZE:
                self._compact()
                return None
            mv = memoryview(buf)
            p = self._pos
            length, hcrc = struct.unpack_from("<II", buf, p + 2)
            if hcrc != binascii.crc32(mv[p : p + 6]) or length > self.max_payload:
                self.bad_frames += 1
                self._skip(1)
                continue
            end = p + HEADER_SIZE + length
            if len(buf) < end + TRAILER_SIZE:
                self._compact()
                return None
            (pcrc,) = struct.unpack_from("<I", buf, end)
            payload = mv[p + HEADER_SIZE : end]
            if pcrc != binascii.crc32(payload):
                # Corrupt or cut short: resynchronise on the byte after this magic.
                self.bad_frames += 1
                self._skip(1)
                continue
            out = bytes(payload)
            self._pos = end + TRAILER_SIZE
            self.frames += 1
            self._compact()
            return out
