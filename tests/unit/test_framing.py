"""Framing: golden bytes, every way of feeding the decoder, noise, damage and resync."""

import json
import zlib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import framing

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "protocol.json").read_text())


def decode_all(data: bytes, step: int | None = None, max_payload: int = 1 << 17) -> list[bytes]:
    dec = framing.FrameDecoder(max_payload=max_payload)
    out = []
    step = step or len(data) or 1
    for i in range(0, len(data), step):
        dec.receive_data(data[i : i + step])
        while (p := dec.next_frame()) is not None:
            out.append(p)
    return out


def test_golden_frames_match_an_independent_crc():
    for v in VECTORS["frames"]:
        payload, frame = bytes.fromhex(v["payload"]), bytes.fromhex(v["frame"])
        assert framing.encode_frame(payload) == frame
        assert frame[:2] == framing.MAGIC
        assert int.from_bytes(frame[2:6], "little") == len(payload)
        assert int.from_bytes(frame[6:10], "little") == zlib.crc32(frame[:6])
        assert int.from_bytes(frame[-4:], "little") == zlib.crc32(payload)


def test_frame_into_is_encode_frame_without_copy():
    payload = bytes(range(200))
    buf = bytearray(len(payload) + framing.OVERHEAD)
    buf[framing.HEADER_SIZE : framing.HEADER_SIZE + len(payload)] = payload
    n = framing.frame_into(buf, len(payload))
    assert bytes(buf[:n]) == framing.encode_frame(payload)


def test_whole_then_bytewise_then_with_trailing_data():
    payloads = [b"a", b"", bytes(1000), b"\xb0\xdc" * 10]
    stream = b"".join(framing.encode_frame(p) for p in payloads)
    assert decode_all(stream) == payloads
    assert decode_all(stream, step=1) == payloads
    dec = framing.FrameDecoder()
    dec.receive_data(stream + framing.encode_frame(b"next")[:7])
    got = [dec.next_frame() for _ in payloads]
    assert got == payloads
    assert dec.next_frame() is None  # the partial frame waits
    assert dec.buffered() == 7


def test_noise_is_skipped_and_kept_for_the_log():
    frame = framing.encode_frame(b"payload")
    dec = framing.FrameDecoder()
    dec.receive_data(b"boot: hello\r\n" + frame + b"\xb0garbage" + frame)
    assert dec.next_frame() == b"payload"
    assert dec.next_frame() == b"payload"
    assert dec.noise_bytes == len(b"boot: hello\r\n") + len(b"\xb0garbage")
    assert b"boot: hello" in dec.take_noise()


def test_flipped_bit_drops_only_that_frame():
    a, b, c = (framing.encode_frame(bytes([i]) * 300) for i in range(3))
    damaged = bytearray(b)
    damaged[100] ^= 0x04
    dec = framing.FrameDecoder()
    dec.receive_data(a + bytes(damaged) + c)
    assert [dec.next_frame(), dec.next_frame(), dec.next_frame()] == [
        bytes([0]) * 300, bytes([2]) * 300, None]
    assert dec.bad_frames == 1


def test_dropped_byte_resyncs_on_the_next_frame():
    frames = [framing.encode_frame(bytes([i]) * 500) for i in range(4)]
    cut = frames[1][:200] + frames[1][201:]
    got = decode_all(frames[0] + cut + frames[2] + frames[3])
    assert got == [bytes([0]) * 500, bytes([2]) * 500, bytes([3]) * 500]


def test_oversize_length_is_rejected_not_awaited():
    big = framing.encode_frame(bytes(5000))
    small = framing.encode_frame(b"ok")
    assert decode_all(big + small, max_payload=4096) == [b"ok"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=300), st.binary(max_size=40)), max_size=12),
    st.integers(min_value=1, max_value=64),
)
def test_any_payloads_survive_noise_between_frames(items, step):
    stream = b""
    for payload, noise in items:
        # Noise that cannot start a frame: the property is about resync, not CRC collisions.
        stream += noise.replace(b"\xb0", b"\x00") + framing.encode_frame(payload)
    assert decode_all(stream, step=step) == [p for p, _ in items]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_and_stay_bounded(data):
    dec = framing.FrameDecoder(max_payload=1024)
    dec.receive_data(data)
    while dec.next_frame() is not None:
        pass
    assert dec.buffered() <= framing.HEADER_SIZE + 1024 + framing.TRAILER_SIZE
    assert len(dec.noise) <= 1024
